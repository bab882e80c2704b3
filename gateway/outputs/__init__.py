"""DICOM results: the AiCOCO answer as a DICOM Segmentation or a TID 1500 Structured Report.

Hospitals take AI results into their PACS as DICOM (IHE AI Results): masks as a Segmentation
(PS3.3 A.51), findings, categories and measurements as a Comprehensive 3D SR holding a TID 1500
Measurement Report. The client chooses with ``output=`` (or ``Accept: application/dicom``);
AiCOCO stays the default. Both are built from the AiCOCO document the pipeline answered, so the
DICOM and the JSON always say the same thing, and with highdicom, which fills in the modules
the IODs require. Results reference their source instances, so DICOM outputs need DICOM inputs.

- :mod:`gateway.outputs.choice`: which output a request asks for.
- :mod:`gateway.outputs.sources`: the source instances of the document's images.
- :mod:`gateway.outputs.seg` and :mod:`gateway.outputs.sr`: the two writers.
"""
