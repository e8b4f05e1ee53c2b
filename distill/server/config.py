"""Configuration of the local teacher server: prices, limits and injected faults.

Everything is a frozen pydantic model, so one value describes one server and can be
written beside a run. Money is ``Decimal``; the token is a ``SecretStr`` so it never
shows up in a repr or a log line.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = ["DEFAULT_HASH_DIM", "MAX_HASH_DIM", "Faults", "Pricing", "ServerConfig"]


# Cohere's documented cap for texts[] and inputs[] per call; we apply it to images[] too.
MAX_ITEMS_PER_CALL = 96
# The images of one call, wherever they are (images[], inputs[].content[], a chat's
# messages): OpenAI's documented cap for one chat request (Anthropic's is 100, Cohere v4
# has none but 20 MB). Each image is decoded and embedded: without a cap, 100,000 1x1 PNGs
# fit in one 16 MB body.
MAX_IMAGES_PER_CALL = 500
# Upper bounds of the settings, far above any provider's so that no typo can make one
# request take the server's memory or time (`--max-items 1000000000` is no cap at all).
MAX_ITEMS_BOUND = 2048  # OpenAI's embeddings maxItems, the most of any API we speak
MAX_IMAGES_BOUND = 3000  # Vertex's images per prompt, the most in our notes
MAX_BODY_BYTES_BOUND = 1024 * 1024 * 1024  # Anthropic takes 32 MB, OpenAI 50 MB of images
MAX_SECONDS = 3600.0  # a body's time, a fault's sleep: an hour
# The hash backend's vector size (`--hash-dim`): OpenAI's largest is 3072. One text at
# 10**7 took 4.3 s, 300 MB and a 53 MB answer; 10**9 was accepted too.
MAX_HASH_DIM = 8192
# The most a price may be, in USD: the price flags' bound (a trillion dollars, the
# client's budget bound). Decimal's arithmetic stops at 10**999999: 1e1000000 was
# accepted, then every bill a decimal.Overflow (a 500).
MAX_USD = Decimal(10**12)
DEFAULT_HASH_DIM = 384  # the hash backend's vector size when --hash-dim is not given
# Cohere v4 caps the images of one call at 20 MB; a little room on top for JSON and base64.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
# The whole body must arrive in this time; slower senders get 408 and a closed connection.
DEFAULT_BODY_TIMEOUT_S = 60.0
# Decoded pixels: one image and one request. A 13,000 x 13,000 PNG is 480 KB on the wire
# and 500 MB of RGB once decoded; the header says so before anything is decoded.
MAX_IMAGE_PIXELS = 40_000_000
MAX_REQUEST_PIXELS = 100_000_000
# Their bounds (`--max-image-pixels`, `--max-request-pixels`): 10**12 was accepted, a
# request of 3 TB once decoded. PIL refuses to open an image of more than 178,956,970
# pixels (twice its Image.MAX_IMAGE_PIXELS) whatever the setting says; a gigapixel per
# request is 3 GB of RGB, ten times the default.
MAX_IMAGE_PIXELS_BOUND = 178_956_970
MAX_REQUEST_PIXELS_BOUND = 1_000_000_000
# The characters of every text of one chat call (all its messages): each is counted as
# tokens for the bill, the last user message is searched for options and embedded, and
# without a cap a body at the 32 MB limit held 32 million of them. 100,000 characters are
# some 25,000 tokens: ImageNet's 1000 class names listed as options fit several times.
MAX_CHAT_TEXT_CHARS = 100_000
# The characters of every text of one embedding call (/v2/embed texts[] or the text parts
# of inputs[], /v1/embeddings input): each is counted as tokens for the bill and embedded
# (Cohere's answer echoes texts[] too), and without a cap a body at the 32 MB limit held
# 32 million of them. OpenAI caps a request at 300,000 tokens summed over its inputs
# (Voyage at 320,000); read here as 300,000 characters, stricter for ordinary text (some
# 4 characters a token) but what vlmclient's `local:` batches already respect (it counts
# a text as its UTF-8 bytes + 1, never fewer than its characters). Per input the
# providers differ (OpenAI 8,192 tokens, Voyage 32,000, Cohere v4 128,000 and truncated
# by default), so no per-text cap: the total is what bounds one call's work.
MAX_EMBED_TEXT_CHARS = 300_000
# OpenAI's "low detail" price of one image in a chat prompt, in tokens.
DEFAULT_IMAGE_TOKENS = 85


class Pricing(BaseModel):
    """What the server charges, in USD.

    Cohere-style ``/v2/embed`` bills ``usd_per_image`` per image plus input tokens.
    OpenAI-style endpoints bill tokens only (an image in a chat prompt counts as
    ``ServerConfig.image_tokens`` prompt tokens), exactly what their ``usage`` block says,
    so a client can recompute every charge from the wire.

    >>> Pricing(usd_per_image=Decimal("0.001")).usd_per_image
    Decimal('0.001')
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The descriptions are the help of `vlm-distill serve-teacher`, whose flags are
    # generated from these models (distill/cli/serve_teacher.py).
    usd_per_image: Decimal = Field(
        default=Decimal("0.0001"), ge=0, le=MAX_USD, description="per image sent to /v2/embed"
    )
    usd_per_1m_input_tokens: Decimal = Field(
        default=Decimal("0.12"), ge=0, le=MAX_USD, description="per million input (prompt) tokens"
    )
    usd_per_1m_output_tokens: Decimal = Field(
        default=Decimal("0.60"), ge=0, le=MAX_USD, description="per million output (answer) tokens"
    )


class Faults(BaseModel):
    """Fractions of requests that fail on purpose, drawn from one seeded RNG.

    One draw per authorised, in-limit request decides its fate: 500/503/529 answer
    before any work and are not billed; ``drop`` (socket closed, no response),
    ``timeout`` (answer after ``timeout_sleep_s``), ``malformed`` (truncated JSON, 200)
    and ``wrong_dim`` (vectors of half the dimension, 200) happen after the work and
    are billed, as a real provider would.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    fail_500: float = Field(default=0.0, ge=0, le=1, description="fraction answered 500")
    fail_503: float = Field(default=0.0, ge=0, le=1, description="fraction answered 503")
    fail_529: float = Field(default=0.0, ge=0, le=1, description="fraction answered 529")
    drop: float = Field(default=0.0, ge=0, le=1, description="close without response")
    timeout: float = Field(default=0.0, ge=0, le=1, description="answer very late")
    malformed: float = Field(default=0.0, ge=0, le=1, description="truncated JSON 200")
    wrong_dim: float = Field(default=0.0, ge=0, le=1, description="half-size vectors")
    # allow_inf_nan=False: "inf" made every request (or every timeout fault) wait for ever
    latency_ms: float = Field(
        default=0.0,
        ge=0,
        le=MAX_SECONDS * 1000,
        allow_inf_nan=False,
        description="added to every API request",
    )
    timeout_sleep_s: float = Field(
        default=30.0,
        ge=0,
        le=MAX_SECONDS,
        allow_inf_nan=False,
        description="how late a 'timeout' is",
    )
    seed: int = Field(default=0, description="seed of the fault draws")

    @model_validator(mode="after")
    def _fractions_fit(self) -> Faults:
        total = (
            self.fail_500
            + self.fail_503
            + self.fail_529
            + self.drop
            + self.timeout
            + self.malformed
            + self.wrong_dim
        )
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault fractions add up to {total:.3f} > 1")
        return self


class ServerConfig(BaseModel):
    """One local teacher server.

    >>> cfg = ServerConfig(token=SecretStr("t0k3n"), rpm=600)
    >>> "t0k3n" in repr(cfg)
    False
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: SecretStr
    # None: any ``model`` in a request is accepted and echoed. Set: other names get 404.
    model_name: str | None = Field(
        default=None, description="only accept this model name (else any)"
    )
    pricing: Pricing = Pricing()
    faults: Faults = Faults()
    rpm: int | None = Field(default=None, ge=1, description="requests per minute, then 429")
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1024,
        le=MAX_BODY_BYTES_BOUND,
        description="larger bodies get 413",
    )
    max_items: int = Field(
        default=MAX_ITEMS_PER_CALL,
        ge=1,
        le=MAX_ITEMS_BOUND,
        description="more inputs in one /v2/embed call get 400",
    )
    max_images: int = Field(
        default=MAX_IMAGES_PER_CALL,
        ge=1,
        le=MAX_IMAGES_BOUND,
        description="more images in one call (any route) get 400",
    )
    image_tokens: int = Field(
        default=DEFAULT_IMAGE_TOKENS, ge=0, description="prompt tokens billed per chat image"
    )
    body_timeout_s: float = Field(
        default=DEFAULT_BODY_TIMEOUT_S,
        gt=0,
        le=MAX_SECONDS,
        allow_inf_nan=False,
        description="slower request bodies get 408",
    )
    max_image_pixels: int = Field(
        default=MAX_IMAGE_PIXELS,
        ge=1,
        le=MAX_IMAGE_PIXELS_BOUND,
        description="an image with more pixels gets 400",
    )
    max_request_pixels: int = Field(
        default=MAX_REQUEST_PIXELS,
        ge=1,
        le=MAX_REQUEST_PIXELS_BOUND,
        description="a call with more image pixels gets 400",
    )

    @model_validator(mode="after")
    def _token_not_empty(self) -> ServerConfig:
        if not self.token.get_secret_value():
            raise ValueError("token must not be empty")
        return self
