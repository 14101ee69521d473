"""MediaPipeline: every image, audio and video part of a request -> model-ready parts, under per-request limits.

Audio becomes an AudioPart (16 kHz mono WAV, media/audio.py); a video becomes `video_frames` ImageParts
(media/video.py), so any vision model can take one. Videos count their frames against the model's image limit.

Sources: raw bytes (data URIs, base64, uploads) and URLs the server fetches (media/fetch.py). Preparation
(decode + resize + encode, media/images.py) runs in a worker thread and is cached by content hash, so the
same image sent again, or many times in a batch, is prepared once. Decodes share one memory budget
(media/pool.py): each reserves its decoded cost, read from the header, before it starts.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, replace
from typing import TYPE_CHECKING

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import (
    AudioInput,
    ImageInput,
    ImagePart,
    ImageURL,
    Message,
    Part,
    VideoInput,
    VideoURL,
)
from vlmserve.errors import BadRequest, PayloadTooLarge
from vlmserve.media.audio import AudioLimits, prepare_audio_async
from vlmserve.media.cache import PreparedImageCache, content_key
from vlmserve.media.fetch import FetchPolicy, fetch_bytes
from vlmserve.media.images import ImageLimits, prepare_image_async
from vlmserve.media.pool import DecodePool
from vlmserve.media.video import VideoLimits, sample_frames_async

if TYPE_CHECKING:
    from vlmserve.config import Settings


@dataclass(frozen=True, slots=True)
class RequestLimits:
    max_images_per_message: int = 8
    max_image_bytes_per_request: int = 64 * 1024 * 1024  # sum of the source bytes of all images


class MediaPipeline:
    def __init__(
        self,
        limits: ImageLimits | None = None,
        fetch: FetchPolicy | None = None,
        request_limits: RequestLimits | None = None,
        cache_bytes: int = 64 * 1024 * 1024,
        audio: AudioLimits | None = None,
        video: VideoLimits | None = None,
        pool: DecodePool | None = None,
    ) -> None:
        self.limits = limits or ImageLimits()
        self.audio = audio or AudioLimits()
        self.video = video or VideoLimits()
        self.fetch_policy = fetch or FetchPolicy(max_bytes=self.limits.max_bytes)
        self.request_limits = request_limits or RequestLimits()
        self.cache = PreparedImageCache(cache_bytes)
        self.pool = pool or DecodePool(512 * 1024 * 1024)

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaPipeline:
        limits = ImageLimits(
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            max_decoded_bytes=settings.max_image_decoded_mb * 2**20,
            resize_filter=settings.media_resize_filter,
        )
        fetch = FetchPolicy(
            enabled=settings.media_fetch_enabled,
            allow=tuple(settings.media_fetch_allow),
            timeout=settings.media_fetch_timeout,
            max_bytes=settings.max_image_bytes,
            max_redirects=settings.media_fetch_max_redirects,
            file_root=settings.media_file_root,
        )
        request_limits = RequestLimits(
            max_images_per_message=settings.max_images_per_message,
            max_image_bytes_per_request=settings.max_request_image_bytes,
        )
        audio = AudioLimits(max_bytes=settings.max_audio_bytes, max_seconds=settings.max_audio_seconds)
        video = VideoLimits(
            max_bytes=settings.max_video_bytes, max_seconds=settings.max_video_seconds, frames=settings.video_frames
        )
        pool = DecodePool(settings.media_decode_memory_mb * 2**20, wait=settings.media_decode_wait)
        return cls(
            limits, fetch, request_limits, cache_bytes=settings.media_cache_bytes, audio=audio, video=video, pool=pool
        )

    def limits_for(self, spec: ModelSpec) -> ImageLimits:
        return replace(
            self.limits,
            max_side=spec.max_image_side,
            budget_pixels=spec.max_image_pixels,
            max_aspect_ratio=spec.aspect_ratio_limit,
            encode_format=spec.image_format,
            pass_through=spec.image_pass_through,
        )

    def check_counts(self, messages: list[Message], spec: ModelSpec) -> None:
        total = 0
        for i, message in enumerate(messages):
            count = sum(1 for p in message.parts if isinstance(p, ImageInput | ImageURL | ImagePart))
            if count > self.request_limits.max_images_per_message:
                raise BadRequest(
                    f"messages[{i}] has {count} images; at most {self.request_limits.max_images_per_message} "
                    "per message",
                    param=f"messages[{i}]",
                    code="too_many_images",
                )
            total += count + self.video.frames * sum(1 for p in message.parts if isinstance(p, VideoInput | VideoURL))
        if total > spec.max_images:
            raise BadRequest(
                f"{total} images (video frames included) in one request; model '{spec.name}' takes at most "
                f"{spec.max_images}",
                param="messages",
                code="too_many_images",
            )

    async def source_bytes(self, part: ImageInput | ImageURL) -> bytes:
        if isinstance(part, ImageInput):
            return part.data
        return await fetch_bytes(self.fetch_policy, part.url, field_name=part.field)

    async def prepare(self, data: bytes, limits: ImageLimits, field: str) -> ImagePart:
        key = await content_key(data, *astuple(limits))  # every limit: a refusal under one is no answer for another
        return await self.cache.get_or_prepare(
            key, lambda: prepare_image_async(data, limits, field=field, pool=self.pool)
        )

    async def video_frames(self, part: VideoInput | VideoURL, limits: ImageLimits) -> list[Part]:
        if isinstance(part, VideoInput):
            data = part.data
        else:
            policy = replace(self.fetch_policy, max_bytes=self.video.max_bytes)
            data = await fetch_bytes(policy, part.url, field_name=part.field)
        frames = await sample_frames_async(data, self.video, field=part.field)
        return [await self.prepare(frame, limits, part.field) for frame in frames]

    async def prepare_messages(self, messages: list[Message], spec: ModelSpec) -> list[Message]:
        """The messages with every image, audio and video fetched, checked and prepared for `spec`'s budget."""
        self.check_counts(messages, spec)
        limits = self.limits_for(spec)
        budget = self.request_limits.max_image_bytes_per_request
        used = 0
        prepared: list[Message] = []
        for message in messages:
            if not any(
                isinstance(p, ImageInput | ImageURL | AudioInput | VideoInput | VideoURL) for p in message.parts
            ):
                prepared.append(message)
                continue
            parts: list[Part] = []
            for part in message.parts:
                if isinstance(part, AudioInput):
                    parts.append(await prepare_audio_async(part.data, self.audio, field=part.field))
                    continue
                if isinstance(part, VideoInput | VideoURL):
                    parts.extend(await self.video_frames(part, limits))
                    continue
                if not isinstance(part, ImageInput | ImageURL):
                    parts.append(part)
                    continue
                data = await self.source_bytes(part)
                used += len(data)
                if used > budget:
                    raise PayloadTooLarge(
                        f"{part.field}: the request's images total more than {budget} bytes", param=part.field
                    )
                parts.append(await self.prepare(data, limits, part.field))
            prepared.append(Message(role=message.role, parts=parts))
        return prepared
