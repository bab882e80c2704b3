"""The calls to the PACS: QIDO-RS searches, WADO-RS metadata and retrieval, STOW-RS storage.

Every failure becomes one error naming the PACS (``DICOMWEB_URL``): unreachable is a 503
``pacs_unavailable``, slow past ``DICOMWEB_TIMEOUT_S`` (per read, so a large series may stream
for longer) a 504 ``pacs_timeout``, an unknown UID a 404 ``study_not_found``, any other refusal
a 502 ``pacs_error`` with the PACS's status and text. The transport is injectable for tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.dicomweb.multipart import boundary_of, related_body, save_parts
from gateway.errors import (
    ApiError,
    PacsError,
    PacsTimeout,
    PacsUnavailable,
    PayloadTooLarge,
    StudyNotFound,
    TooManyFiles,
)
from gateway.settings import Settings

RAISES: tuple[type[ApiError], ...] = (
    StudyNotFound,
    PacsError,
    PacsTimeout,
    PacsUnavailable,
    PayloadTooLarge,
    TooManyFiles,
)
"""What talking to the PACS can raise: the study or series is not there, the PACS fails, is slow
or cannot be reached, a series over the upload limits."""

DICOM_JSON = "application/dicom+json"
_SERIES_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_FAILURE_REASON = "00081197"
_REFERENCED_SOP = "00081199"
_FAILED_SOP = "00081198"
_SOP_INSTANCE = "00081155"
_SOP_CLASS = "00081150"


@dataclass(frozen=True)
class Stored:
    sop_instance_uid: str
    sop_class_uid: str


class DicomwebClient:
    def __init__(
        self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.url = settings.dicomweb_url
        auth: httpx.Auth | None = None
        headers = {}
        if settings.dicomweb_token:
            headers["Authorization"] = f"Bearer {settings.dicomweb_token}"
        elif settings.dicomweb_username:
            auth = httpx.BasicAuth(settings.dicomweb_username, settings.dicomweb_password)
        self._client = httpx.AsyncClient(
            base_url=self.url + "/",
            auth=auth,
            headers=headers,
            timeout=settings.dicomweb_timeout_s,
            transport=transport,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def series(self, study: str) -> list[dict[str, Any]]:
        """QIDO-RS: the study's series (Modality, SeriesNumber, SeriesInstanceUID...)."""
        found = await self._json(f"studies/{study}/series", f"study {study}")
        if not found:
            raise StudyNotFound(
                f"the PACS at {self.url} has no study {study}", details={"study": study}
            )
        return found

    async def metadata(self, study: str, series: str) -> list[dict[str, Any]]:
        """WADO-RS metadata: every instance's attributes, without its pixels."""
        found = await self._json(
            f"studies/{study}/series/{series}/metadata", f"series {series} of study {study}"
        )
        if not found:
            raise StudyNotFound(
                f"the PACS at {self.url} has no series {series} in study {study}",
                details={"study": study, "series": series},
            )
        return found

    async def retrieve(
        self, study: str, series: str, folder: Path, *, max_bytes: int, max_files: int
    ) -> list[Path]:
        """WADO-RS: the series' instances, streamed into ``folder`` one file each."""
        what = f"series {series} of study {study}"
        path = f"studies/{study}/series/{series}"
        async with self._calling(what):
            request = self._client.build_request("GET", path, headers={"Accept": _SERIES_ACCEPT})
            response = await self._client.send(request, stream=True)
            try:
                await self._check(response, what)
                boundary = boundary_of(response.headers.get("content-type", ""))
                return await save_parts(
                    response.aiter_bytes(),
                    boundary,
                    folder,
                    max_bytes=max_bytes,
                    max_parts=max_files,
                )
            finally:
                await response.aclose()

    async def store(self, study: str, instances: Sequence[bytes]) -> list[Stored]:
        """STOW-RS into the study; the instances the PACS says it stored."""
        body, content_type = related_body(instances)
        what = f"storing into study {study}"
        async with self._calling(what):
            response = await self._client.post(
                f"studies/{study}",
                content=body,
                headers={"Content-Type": content_type, "Accept": DICOM_JSON},
            )
        await self._check(response, what)
        answer = response.json() if response.content else {}
        failed = answer.get(_FAILED_SOP, {}).get("Value", [])
        if failed:
            reasons = [item.get(_FAILURE_REASON, {}).get("Value", ["?"])[0] for item in failed]
            raise PacsError(
                f"the PACS at {self.url} refused {len(failed)} of {len(instances)} instance(s) "
                f"(failure reasons {reasons}, PS3.18 Table I.2-1)",
                details={"failure_reasons": reasons},
            )
        stored = answer.get(_REFERENCED_SOP, {}).get("Value", [])
        return [
            Stored(
                item.get(_SOP_INSTANCE, {}).get("Value", [""])[0],
                item.get(_SOP_CLASS, {}).get("Value", [""])[0],
            )
            for item in stored
        ]

    async def _json(self, path: str, what: str) -> list[dict[str, Any]]:
        async with self._calling(what):
            response = await self._client.get(path, headers={"Accept": DICOM_JSON})
        await self._check(response, what)
        if response.status_code == 204 or not response.content:
            return []
        found = response.json()
        if not isinstance(found, list):
            raise PacsError(f"the PACS at {self.url} answered {what} with JSON that is not a list")
        return found

    @contextlib.asynccontextmanager
    async def _calling(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except ApiError:
            raise
        except httpx.TimeoutException:
            raise PacsTimeout(
                f"the PACS at {self.url} did not answer ({what}) within DICOMWEB_TIMEOUT_S",
                details={"pacs": self.url},
            ) from None
        except httpx.TransportError as exc:
            raise PacsUnavailable(
                f"the PACS at {self.url} cannot be reached ({what}): {exc or type(exc).__name__}",
                details={"pacs": self.url},
            ) from None

    async def _check(self, response: httpx.Response, what: str) -> None:
        if response.status_code < 400:
            return
        await response.aread()
        text = response.text.strip()[:300]
        if response.status_code == 404:
            raise StudyNotFound(f"the PACS at {self.url} has no {what}", details={"pacs": self.url})
        if response.status_code in (401, 403):
            raise PacsError(
                f"the PACS at {self.url} refused the credentials ({response.status_code}): set "
                "DICOMWEB_USERNAME and DICOMWEB_PASSWORD, or DICOMWEB_TOKEN",
                details={"pacs": self.url, "status": response.status_code},
            )
        raise PacsError(
            f"the PACS at {self.url} answered {response.status_code} ({what}): {text}",
            details={"pacs": self.url, "status": response.status_code},
        )
