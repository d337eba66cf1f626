"""Media requests held for their worst case (issue 12): images validated like OpenAI before any hold,
`n` in the hold; transcriptions held for the duration the audio container states."""

import struct
import wave
from io import BytesIO

import openai
import pytest

from billing.models import Balance, Hold, LedgerEntry, UsageEvent
from proxy.tests.integration.helpers import AUDIO_MINUTE_NANOS, assert_billed_once, round_half_up_div

pytestmark = [pytest.mark.integration, pytest.mark.embedded]


@pytest.mark.parametrize(
    ("_case", "params", "param"),
    [
        ("unknown size", {"size": "4096x4096"}, "size"),
        ("size of the wrong type", {"size": 1024}, "size"),
        ("unknown quality", {"quality": "ultra"}, "quality"),
        ("too many images", {"n": 11}, "n"),
        ("no images", {"n": 0}, "n"),
        ("n as a string", {"n": "2"}, "n"),
    ],
)
def test_image_parameters_openai_refuses_are_refused_before_any_hold(gateway, _case, params, param):
    before = Balance.objects.get(org_id=gateway.tenant.org.id).balance_nanos
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.openai().images.generate(model="image-test", prompt="a cat", extra_body=params)
    assert caught.value.body["param"] == param
    assert caught.value.body["type"] == "invalid_request_error"
    # nothing reached the upstream, nothing was held or billed
    assert gateway.mock.requests == []
    assert (Hold.objects.count(), UsageEvent.objects.count(), LedgerEntry.objects.filter(kind="usage").count()) == (
        0,
        0,
        0,
    )
    assert Balance.objects.get(org_id=gateway.tenant.org.id).balance_nanos == before


def test_images_hold_every_image_at_its_largest_output(gateway):
    # when: four images of a 5-byte prompt (image-test: $5 / $40 per 1M tokens, $0.01 an image)
    gateway.openai().images.generate(model="image-test", prompt="a cat", n=4, size="1024x1536", quality="high")
    # then: held for 5 input tokens, 4 × 6240 output tokens (gpt-image-1 high quality 1024x1536) and 4 images
    event = UsageEvent.objects.get()
    hold = Hold.objects.get(request_id=event.request_id)
    assert hold.amount_nanos == 5 * 5_000 + 4 * 6240 * 40_000 + 4 * 10_000_000 == 1_038_425_000
    assert 0 < event.cost_nanos <= hold.amount_nanos


def _wav(seconds: int, rate: int) -> bytes:
    out = BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(rate)
        w.writeframes(struct.pack("B", 128) * (rate * seconds))
    return out.getvalue()


@pytest.mark.parametrize("response_format", ["json", "text"])
def test_a_low_bitrate_transcription_is_held_and_billed_for_its_whole_duration(gateway, response_format):
    # given: 90 s of audio at 1000 bytes/s, a quarter of the density the old hold assumed (it held 23 s)
    audio = _wav(90, 1000)
    # when
    gateway.openai().audio.transcriptions.create(
        model="whisper-test", file=("quiet.wav", audio, "audio/wav"), response_format=response_format
    )
    # then: held for 91 s (the container's 90 s and a second), billed 90 s
    cost = round_half_up_div(90 * AUDIO_MINUTE_NANOS, 60)
    event = assert_billed_once(gateway.tenant, cost)
    assert event.units == 90
    hold = Hold.objects.get(request_id=event.request_id)
    assert hold.amount_nanos == round_half_up_div(91 * AUDIO_MINUTE_NANOS, 60) >= cost
