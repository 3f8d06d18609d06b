"""Content negotiation: pick the media type of a prediction (RFC 9110, section 12.5.1)."""

from __future__ import annotations

import dataclasses

from deepaas_like.media import JSON, compatible, is_json

__all__ = ["JSON", "MediaRange", "best_match", "choose_media_type", "is_json", "parse_accept", "quality"]


@dataclasses.dataclass(frozen=True)
class MediaRange:
    """One element of an ``Accept`` header, e.g. ``image/*;q=0.5``."""

    type: str
    subtype: str
    q: float

    def matches(self, media_type: str) -> bool:
        """Whether this range covers ``media_type``; an offered range such as ``image/*``
        covers a concrete request such as ``image/png`` too (the plugin can produce it).
        """
        return compatible(f"{self.type}/{self.subtype}", media_type)

    @property
    def specificity(self) -> int:
        """0 for ``*/*``, 1 for ``type/*``, 2 for ``type/subtype``."""
        return (self.type != "*") + (self.subtype != "*")


def parse_accept(header: str) -> list[MediaRange]:
    """Parse an ``Accept`` header; malformed elements and parameters other than ``q`` are ignored."""
    ranges = []
    for element in header.split(","):
        media, *params = (piece.strip() for piece in element.split(";"))
        kind, slash, sub = media.lower().partition("/")
        if not slash or not kind or not sub:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        ranges.append(MediaRange(kind, sub, q))
    return ranges


def quality(ranges: list[MediaRange], media_type: str) -> float:
    """The q-value ``ranges`` give ``media_type``: that of the most specific matching range."""
    matching = [r for r in ranges if r.matches(media_type.lower())]
    if not matching:
        return 0.0
    return max(matching, key=lambda r: r.specificity).q


def best_match(header: str, offered: list[str]) -> str | None:
    """The offered media type the header prefers most (ties go to the earlier offer);
    None when none is acceptable (every q is 0).
    """
    ranges = parse_accept(header)
    if not ranges:
        return offered[0] if offered else None
    scored = [(quality(ranges, media_type), -index, media_type) for index, media_type in enumerate(offered)]
    best = max(scored, default=(0.0, 0, None))
    return best[2] if best[0] > 0 else None


def choose_media_type(
    accept_header: str | None, accept_argument: str | None, offered: list[str], default: str | None
) -> str | None:
    """The media type a prediction is produced in: one of ``offered`` (the plugin's
    ``accept`` choices, which may be ranges such as ``image/*``), or None.

    An explicit ``accept`` argument wins; otherwise the ``Accept`` header picks among
    ``offered``; otherwise, and also when the header accepts none of them, ``default`` or
    the first offer: DEEPaaS answers so, and RFC 9110 section 12.5.1 allows a server to
    disregard an ``Accept`` it cannot satisfy. Models that offer nothing answer JSON.
    """
    if accept_argument is not None:
        return accept_argument
    if not offered:
        return None
    if accept_header and accept_header.strip() not in ("*/*", ""):
        chosen = best_match(accept_header, offered)
        if chosen is not None:
            return chosen
    return default if default in offered else offered[0]
