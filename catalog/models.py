"""What the platform sells: upstream providers, public models, their routes and prices."""

from django.db import models
from django.utils import timezone


class Provider(models.Model):
    """An upstream channel: where requests go and with which credentials."""

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"
        ANTHROPIC = "anthropic", "Anthropic"
        ECHO = "echo", "Built-in echo (demo, no upstream)"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # As the provider's official SDK takes it: https://api.openai.com/v1, https://api.anthropic.com
    base_url = models.URLField(max_length=500, blank=True)
    # Fernet token (catalog.crypto); never shown back, never logged.
    api_key_encrypted = models.TextField(blank=True, default="")
    # Name of an environment variable that holds the key instead (read at use).
    api_key_env = models.CharField(max_length=100, blank=True, default="")
    extra_headers = models.JSONField(default=dict, blank=True)
    # Protocol quirks: stream_usage (bool), max_tokens_field, image_urls, requires_user_first.
    options = models.JSONField(default=dict, blank=True)
    connect_timeout_s = models.FloatField(null=True, blank=True)
    read_timeout_s = models.FloatField(null=True, blank=True)
    is_enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


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

    name = models.CharField(max_length=200, unique=True)
    display_name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    mode = models.CharField(max_length=20, choices=Mode.choices, default=Mode.CHAT)
    context_window = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    thinking = models.CharField(max_length=20, choices=Thinking.choices, blank=True, default="")
    supports_tools = models.BooleanField(default=True)
    supports_vision = models.BooleanField(default=False)
    structured_output = models.BooleanField(default=False)
    is_enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Route(models.Model):
    """A provider serving a model under its own upstream name. Lower priority is tried first."""

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="routes")
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="routes")
    upstream_model = models.CharField(max_length=200)
    priority = models.PositiveIntegerField(default=1)
    weight = models.PositiveIntegerField(default=1)
    is_enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["priority", "id"]
        constraints = [models.UniqueConstraint(fields=["model", "provider"], name="route_unique_model_provider")]

    def __str__(self) -> str:
        return f"{self.model} via {self.provider} ({self.upstream_model})"


class Price(models.Model):
    """A model's sell prices from `effective_from` on; rows are never edited, only added.

    Token prices are nano-USD per million tokens (billing.money); unit prices nano-USD per unit.
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
                & models.Q(character_nanos_per_mchar__gte=0),
                name="price_non_negative",
            )
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from:%Y-%m-%d %H:%M}"
