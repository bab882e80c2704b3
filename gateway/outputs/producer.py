"""Who made a result, and the codes it is described with.

The standard asks a DICOM result to identify its algorithm (Segment Description's Algorithm
Identification, PS3.3 C.8.20.2; TID 4019 Algorithm Identification in an SR) and the equipment
that contributed to it (Contributing Equipment Sequence, PS3.3 C.12.1.1.6): here the model with
the version Triton serves, and this service with its version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import highdicom as hd
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

MANUFACTURER = "aicoco-gateway"
PRIVATE_SCHEME = "99AICOCO"
"""Coding scheme of a category or regression that declares no standard code: schemes starting
with 99 are private by PS3.16 8.2, so a reader knows not to look them up."""


@dataclass(frozen=True)
class Producer:
    model: str
    model_version: str
    service_version: str

    def algorithm(self) -> hd.AlgorithmIdentificationSequence:
        return hd.AlgorithmIdentificationSequence(
            name=self.model,
            family=codes.cid7162.ArtificialIntelligence,
            version=self.model_version,
            source=MANUFACTURER,
        )

    def sr_algorithm(self) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(name=self.model, version=self.model_version)

    def equipment(self) -> hd.ContributingEquipment:
        return hd.ContributingEquipment(
            manufacturer=MANUFACTURER,
            purpose_of_reference=codes.DCM.ProcessingEquipment,
            manufacturer_model_name=self.model,
            software_versions=self.service_version,
            contribution_description=f"AI result of model {self.model} {self.model_version}",
        )


def new_instance(series_number: int, description: str) -> dict[str, Any]:
    """What every result instance gets: a new series (results are never added to the source
    series) of one instance, and the manufacturer."""
    return {
        "series_instance_uid": hd.UID(),
        "series_number": series_number,
        "sop_instance_uid": hd.UID(),
        "instance_number": 1,
        "manufacturer": MANUFACTURER,
        "series_description": description[:64],
    }


def declared_code(spec: Mapping[str, Any], key: str, default: Code) -> Code:
    """A code a category declares under ``key`` as ``{"value", "scheme", "meaning"}`` or
    ``[value, scheme, meaning]``, else ``default``."""
    raw = spec.get(key)
    if isinstance(raw, Mapping):
        return Code(str(raw["value"]), str(raw["scheme"]), str(raw["meaning"]))
    if isinstance(raw, list | tuple) and len(raw) == 3:
        return Code(str(raw[0]), str(raw[1]), str(raw[2]))
    return default


def private_code(name: str) -> Code:
    return Code(name, PRIVATE_SCHEME, name.replace("_", " "))


def ucum(unit: str | None) -> Code:
    """AiCOCO's unit text as UCUM: ``mm^2`` is ``mm2``; none is UCUM's ``1``."""
    if not unit:
        return Code("1", "UCUM", "no units")
    return Code(unit.replace("^", ""), "UCUM", unit)
