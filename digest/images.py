"""Whether the issue's photos answer: one short request per image URL, only when asked."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from digest.articles import USER_AGENT, HttpOnlyRedirects

#: Seconds one image may take to start answering.
DEFAULT_TIMEOUT = 5.0
#: Requests in flight at once: a few, so a slow image host does not hold up the check.
WORKERS = 8


@dataclass(frozen=True, slots=True)
class ImageProblem:
    """An image URL that would show readers a broken picture, and why."""

    url: str
    reason: str  # "no answer within 5 seconds", "HTTP 404 Not Found", "not an image (text/html)"

    def sentence(self) -> str:
        """The warning `digest check` prints."""
        shown = self.url if len(self.url) <= 100 else self.url[:97] + "..."
        return f"The image {shown} does not load: {self.reason}."


def probe(url: str, timeout: float = DEFAULT_TIMEOUT) -> ImageProblem | None:
    """Ask for url once; None when it answers 2xx with an image, else what went wrong."""
    opener = urllib.request.build_opener(HttpOnlyRedirects())
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})  # noqa: S310 - link_url() allowed only http(s)
    try:
        with opener.open(request, timeout=timeout) as response:
            kind = response.headers.get_content_type()
            response.read(1)  # the first byte arrived: the image is being served
    except urllib.error.HTTPError as exc:
        exc.close()
        return ImageProblem(url, f"HTTP {exc.code} {exc.reason}")
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            return ImageProblem(url, f"no answer within {timeout:g} seconds")
        return ImageProblem(url, f"cannot connect ({exc.reason})")
    except TimeoutError:
        return ImageProblem(url, f"no answer within {timeout:g} seconds")
    except OSError as exc:
        return ImageProblem(url, f"cannot connect ({exc})")
    if not kind.startswith("image/"):
        return ImageProblem(url, f"not an image ({kind})")
    return None


def unreachable_images(
    urls: Iterable[str], timeout: float = DEFAULT_TIMEOUT
) -> list[ImageProblem]:
    """Every URL among urls (asked once each, a few at a time) that does not load."""
    distinct = list(dict.fromkeys(urls))
    if not distinct:
        return []
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(distinct))) as pool:
        results = list(pool.map(lambda u: probe(u, timeout), distinct))
    return [problem for problem in results if problem is not None]
