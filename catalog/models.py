"""What the platform sells: upstream providers, public models, their routes and prices."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class Provider(models.Model):
    """An upstream channel: where requests go and with which credentials."""

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"
        ANTHROPIC = "anthropic", "Anthropic"
        GEMINI = "gemini", "Google Gemini (native generateContent)"
        RESPONSES = "responses", "OpenAI Responses API (/v1/responses)"
        ECHO = "echo", "Built-in echo (demo, no upstream)"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    class Health(models.TextChoices):
        UNKNOWN = "unknown", "Not checked"
        HEALTHY = "healthy", "Healthy"
        UNHEALTHY = "unhealthy", "Unhealthy"

    # As the provider's official SDK takes it: https://api.openai.com/v1, https://api.anthropic.com,
    # https://generativelanguage.googleapis.com/v1beta
    base_url = models.URLField(max_length=500, blank=True)
    # The primary key, a Fernet token (catalog.crypto); never shown back, never logged. More keys
    # for rotation live in ProviderKey; requests round-robin over all enabled ones.
    api_key_encrypted = models.TextField(blank=True, default="")
    # Name of an environment variable that holds the key instead (read at use).
    api_key_env = models.CharField(max_length=100, blank=True, default="")
    extra_headers = models.JSONField(default=dict, blank=True)
    # Protocol quirks: stream_usage (bool), max_tokens_field, image_urls, requires_user_first.
    options = models.JSONField(default=dict, blank=True)
    connect_timeout_s = models.FloatField(null=True, blank=True)
    read_timeout_s = models.FloatField(null=True, blank=True)
    is_enabled = models.BooleanField(default=True)
    # Written by the admin's "test connection" (catalog.services.provider_check_record). The router
    # tries routes of an unhealthy provider last rather than never: a stale mark must not take a
    # model offline (proxy/router.py keeps the live, per-process circuit breaker).
    health_status = models.CharField(max_length=20, choices=Health.choices, default=Health.UNKNOWN)
    last_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_check_error = models.CharField(max_length=500, blank=True, default="")  # scrubbed, never a key
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ProviderKey(models.Model):
    """An additional upstream API key of a provider, rotated round-robin with the primary one."""

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="keys")
    label = models.CharField(max_length=100, blank=True)
    key_encrypted = models.TextField()  # Fernet token; the plaintext is never stored or shown
    key_hint = models.CharField(max_length=16, blank=True)  # catalog.crypto.mask_secret, for the admin
    is_enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["provider", "id"]

    def __str__(self) -> str:
        return f"{self.provider} key {self.label or self.pk} ({self.key_hint})"


class Model(models.Model):
    """A public model id clients send, e.g. `gpt-4o-mini` or `claude-sonnet-4`."""

    class Mode(models.TextChoices):
        CHAT = "chat", "Chat"
        EMBEDDING = "embedding", "Embeddings"
        IMAGE = "image", "Image generation"
        TRANSCRIPTION = "transcription", "Audio transcription"
        SPEECH = "speech", "Text to speech"

    class Thinking(models.TextChoices):
        NONE = "", "None"
        BUDGET = "budget", "Budget (thinking.budget_tokens)"
        ADAPTIVE = "adaptive", "Adaptive (output_config.effort)"

    class Visibility(models.TextChoices):
        PUBLIC = "public", "Every organisation"
        RESTRICTED = "restricted", "Only the chosen organisations"

    name = models.CharField(max_length=200, unique=True)
    # Other ids clients may send for this model (e.g. a dated snapshot name); unique across the catalog.
    aliases = models.JSONField(default=list, blank=True)
    display_name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    mode = models.CharField(max_length=20, choices=Mode.choices, default=Mode.CHAT)
    context_window = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    thinking = models.CharField(max_length=20, choices=Thinking.choices, blank=True, default="")
    supports_tools = models.BooleanField(default=True)
    supports_vision = models.BooleanField(default=False)
    structured_output = models.BooleanField(default=False)
    supports_audio = models.BooleanField(default=False, help_text="audio input or output")
    supports_images = models.BooleanField(default=False, help_text="image output")
    is_enabled = models.BooleanField(default=True)
    # Protocol flags of this model (issue 14), read through catalog.snapshot: `mid_conv_system` (an Anthropic
    # upstream takes {role:"system"} messages in place), `auto_cache` (place prompt-cache breakpoints for
    # converted requests), `reasoning_efforts` (the reasoning_effort words an OpenAI-protocol upstream accepts).
    options = models.JSONField(default=dict, blank=True)
    visibility = models.CharField(max_length=20, choices=Visibility.choices, default=Visibility.PUBLIC)
    organizations = models.ManyToManyField(
        "accounts.Organization", blank=True, related_name="+", help_text="who may use a restricted model"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def capabilities(self) -> list[str]:
        """Capability words for listings: tools, vision, thinking, embeddings, audio, images."""
        flags = {
            "tools": self.supports_tools and self.mode == self.Mode.CHAT,
            "vision": self.supports_vision,
            "thinking": bool(self.thinking),
            "embeddings": self.mode == self.Mode.EMBEDDING,
            "audio": self.supports_audio or self.mode in (self.Mode.TRANSCRIPTION, self.Mode.SPEECH),
            "images": self.supports_images or self.mode == self.Mode.IMAGE,
        }
        return [name for name, present in flags.items() if present]


class Route(models.Model):
    """A provider serving a model under its own upstream name. Lower priority is tried first."""

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="routes")
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="routes")
    upstream_model = models.CharField(max_length=200)
    priority = models.PositiveIntegerField(default=1)
    weight = models.PositiveIntegerField(default=1)
    is_enabled = models.BooleanField(default=True)
    # In-process caps (proxy/router.py), per gateway process: null = unlimited.
    max_concurrency = models.PositiveIntegerField(null=True, blank=True, help_text="requests in flight")
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="requests per minute")

    class Meta:
        ordering = ["priority", "id"]
        constraints = [models.UniqueConstraint(fields=["model", "provider"], name="route_unique_model_provider")]

    def __str__(self) -> str:
        return f"{self.model} via {self.provider} ({self.upstream_model})"


class Price(models.Model):
    """A model's sell prices from `effective_from` on; rows are never edited, only added.

    Token prices are nano-USD per million tokens (billing.money); unit prices nano-USD per unit.
    `cost_*` is what the provider charges us (for margins), never billed to a tenant.
    """

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="prices")
    effective_from = models.DateTimeField(default=timezone.now, db_index=True)
    input_nanos_per_mtok = models.BigIntegerField(default=0)
    output_nanos_per_mtok = models.BigIntegerField(default=0)
    cache_read_nanos_per_mtok = models.BigIntegerField(default=0)
    cache_write_nanos_per_mtok = models.BigIntegerField(default=0)
    image_nanos = models.BigIntegerField(default=0, help_text="per generated image")
    audio_minute_nanos = models.BigIntegerField(default=0, help_text="per minute of transcribed audio")
    character_nanos_per_mchar = models.BigIntegerField(default=0, help_text="per million characters of speech input")
    # Server tools the upstream runs and charges per use (usage.server_tool_use), nano-USD per 1,000 requests
    # ("kreq"), the unit Anthropic prices them in ($10 per 1,000 web searches).
    web_search_nanos_per_kreq = models.BigIntegerField(default=0, help_text="per 1,000 web search requests")
    web_fetch_nanos_per_kreq = models.BigIntegerField(default=0, help_text="per 1,000 web fetch requests")
    cost_input_nanos_per_mtok = models.BigIntegerField(default=0)
    cost_output_nanos_per_mtok = models.BigIntegerField(default=0)
    cost_cache_read_nanos_per_mtok = models.BigIntegerField(default=0)
    cost_cache_write_nanos_per_mtok = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(input_nanos_per_mtok__gte=0)
                & models.Q(output_nanos_per_mtok__gte=0)
                & models.Q(cache_read_nanos_per_mtok__gte=0)
                & models.Q(cache_write_nanos_per_mtok__gte=0)
                & models.Q(image_nanos__gte=0)
                & models.Q(audio_minute_nanos__gte=0)
                & models.Q(character_nanos_per_mchar__gte=0)
                & models.Q(web_search_nanos_per_kreq__gte=0)
                & models.Q(web_fetch_nanos_per_kreq__gte=0)
                & models.Q(cost_input_nanos_per_mtok__gte=0)
                & models.Q(cost_output_nanos_per_mtok__gte=0)
                & models.Q(cost_cache_read_nanos_per_mtok__gte=0)
                & models.Q(cost_cache_write_nanos_per_mtok__gte=0),
                name="price_non_negative",
            )
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from:%Y-%m-%d %H:%M}"


class AuditEntry(models.Model):
    """Who changed prices, keys or availability, when, and what it was before and after.

    Written only by catalog.services; secrets appear masked (last four characters) or not at all.
    """

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=200, blank=True)  # kept if the user is deleted; "loadcatalog" etc.
    action = models.CharField(max_length=50, db_index=True)  # e.g. price.set, key.add, provider.disable
    target_type = models.CharField(max_length=50)
    target_id = models.CharField(max_length=50, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_label} {self.action} {self.target_repr}"
