"""Volumetric inference: the grid a patch-based 3D model sees, its intensities, and the sliding
window that covers a volume with its patches.

Each step is defined against the library users trained with, MONAI, and the tests compare them
with it on the same data: :mod:`~gateway.volumes.grid` with ``Spacing`` and ``SpatialResample``,
:mod:`~gateway.volumes.intensity` with ``ScaleIntensityRange`` and ``NormalizeIntensity`` (and
nnU-Net's CT normalisation), :mod:`~gateway.volumes.windows` with
``sliding_window_inference``. Pure numpy: the gateway never imports torch.

Axes are ``(z, y, x)`` throughout: slices, rows, columns of the stack the readers return
(:class:`~gateway.readers.ImageSet`), with its ``spacing`` in the same order.
"""
