"""Python-based Triton backends shipped with the local launcher (copied into its backend dir)."""
