"""Tiny checkpoints: the folder a user would download, the real ``from_pretrained`` path back, the processor.

The tiny checkpoints of both families (``tests/conftest.py``) are written exactly like the
published Qwen-Omni folders (whole Omni model: Thinker + talker + token2wav/code2wav, a processor,
a chat template) and loaded back through ``seats_exp.models.loading.load_model``, the code a real
run uses, which must extract the Thinker alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from seats_exp.models.loading import ModelLoadError, load_model
from seats_exp.models.processor_parts import QWEN3_EXTRA_SPECIAL, SPECIAL_TOKENS, build_processor
from seats_exp.models.tiny import STAMP, TINY_LAYERS, build_tiny_checkpoint

FAMILIES = ("qwen2_5_omni", "qwen3_omni")

# Per family: the Omni model_type of config.json, the sub-model configs and weight prefixes a
# published checkpoint holds, the Thinker class, the processor class and the prompt markers.
EXPECTED = {
    "qwen2_5_omni": dict(
        model_type="qwen2_5_omni",
        architecture="Qwen2_5OmniForConditionalGeneration",
        sub_configs=("thinker_config", "talker_config", "token2wav_config"),
        prefixes={"thinker", "talker", "token2wav"},
        thinker_cls="Qwen2_5OmniThinkerForConditionalGeneration",
        processor_cls="Qwen2_5OmniProcessor",
        video_marker="<|vision_bos|><|VIDEO|><|vision_eos|>",
        audio_marker="<|audio_bos|><|AUDIO|><|audio_eos|>",
        video_token="<|VIDEO|>",
        audio_token="<|AUDIO|>",
        video_id_key="video_token_index",
        audio_id_key="audio_token_index",
        patch=14,
    ),
    "qwen3_omni": dict(
        model_type="qwen3_omni_moe",
        architecture="Qwen3OmniMoeForConditionalGeneration",
        sub_configs=("thinker_config", "talker_config", "code2wav_config"),
        prefixes={"thinker", "talker", "code2wav"},
        thinker_cls="Qwen3OmniMoeThinkerForConditionalGeneration",
        processor_cls="Qwen3OmniMoeProcessor",
        video_marker="<|vision_start|><|video_pad|><|vision_end|>",
        audio_marker="<|audio_start|><|audio_pad|><|audio_end|>",
        video_token="<|video_pad|>",
        audio_token="<|audio_pad|>",
        video_id_key="video_token_id",
        audio_id_key="audio_token_id",
        patch=16,
    ),
}

SYSTEM = "You are a careful assistant."
PROMPT = "Question: What colour is shown?\nChoices: A. red\nB. blue"


@pytest.fixture(scope="module")
def checkpoints(tiny_qwen2_5, tiny_qwen3) -> dict[str, Path]:
    return {"qwen2_5_omni": tiny_qwen2_5, "qwen3_omni": tiny_qwen3}


@pytest.fixture(scope="module")
def loaded(checkpoints):
    """Each family loaded once through the production loader (fp32, CPU)."""
    return {
        family: load_model(str(path), family=family, dtype="float32", attn_implementation="sdpa", device="cpu")
        for family, path in checkpoints.items()
    }


def _saved_tensors(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    files = sorted(folder.glob("*.safetensors"))
    assert files, f"no safetensors in {folder}"
    for f in files:
        with safe_open(str(f), "pt") as fh:
            for key in fh.keys():
                tensors[key] = fh.get_tensor(key)
    return tensors


# ------------------------------------------------------------------------------------------------
# The folder on disk
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_folder_has_the_published_layout(checkpoints, family):
    folder, exp = checkpoints[family], EXPECTED[family]
    names = {p.name for p in folder.iterdir()}
    for required in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
                     "tokenizer_config.json", "chat_template.jinja", "generation_config.json", STAMP):
        assert required in names, f"{required} missing from {sorted(names)}"

    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == exp["model_type"]
    assert config["architectures"] == [exp["architecture"]]  # the whole Omni model, not the Thinker
    for sub in exp["sub_configs"]:
        assert isinstance(config.get(sub), dict), f"config.json lacks {sub}"
    text_cfg = config["thinker_config"]["text_config"]
    assert text_cfg["num_hidden_layers"] == TINY_LAYERS
    assert config["thinker_config"]["vision_config"]["patch_size"] == exp["patch"]

    keys = set(_saved_tensors(folder))
    assert {k.split(".", 1)[0] for k in keys} == exp["prefixes"]
    assert any(k.startswith("thinker.model.layers.") for k in keys)
    assert any(k.startswith("thinker.visual.") for k in keys)
    assert any(k.startswith("thinker.audio_tower.") for k in keys)

    stamp = json.loads((folder / STAMP).read_text())
    assert stamp["family"] == family and stamp["layers"] == TINY_LAYERS


def test_build_tiny_checkpoint_is_idempotent_and_seeded(checkpoints, tmp_path):
    folder = checkpoints["qwen2_5_omni"]
    before = (folder / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_checkpoint("qwen2_5_omni", folder) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == before, "a stamped folder must be reused, not rewritten"

    again = build_tiny_checkpoint("qwen2_5_omni", tmp_path / "again")
    a, b = _saved_tensors(folder), _saved_tensors(again)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "same family and seed must give the same weights"


# ------------------------------------------------------------------------------------------------
# from_pretrained back: only the Thinker, every weight from the file
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_load_model_extracts_exactly_the_thinker(checkpoints, family, monkeypatch, tmp_path):
    import transformers.modeling_utils as modeling_utils

    # transformers' own account of the load (the report it prints), captured for every from_pretrained.
    reports = []
    original = modeling_utils.log_state_dict_report

    def spy(*args, **kwargs):
        reports.append(kwargs["loading_info"])
        return original(*args, **kwargs)

    monkeypatch.setattr(modeling_utils, "log_state_dict_report", spy)
    exp = EXPECTED[family]
    lm = load_model(str(checkpoints[family]), family=family, dtype="float32", attn_implementation="sdpa", device="cpu")
    thinker = lm.thinker
    assert type(thinker).__name__ == exp["thinker_cls"]
    assert not thinker.training
    assert lm.adapter.family == family and lm.adapter.num_layers == TINY_LAYERS
    assert lm.device == torch.device("cpu")
    assert all(p.dtype == torch.float32 for p in thinker.parameters())
    # No talker / waveform decoder came along.
    top = {name.split(".")[0] for name, _ in thinker.named_modules() if name}
    assert not top & {"talker", "token2wav", "code2wav"}, top

    assert len(reports) == 1, "load_model must load weights once, the Thinker only"
    info = reports[0]
    assert not info.missing_keys, sorted(info.missing_keys)[:5]
    assert not info.unexpected_keys, sorted(info.unexpected_keys)[:5]
    assert not info.mismatched_keys and not info.conversion_errors and not info.error_msgs

    # Every loaded weight is the saved thinker.* tensor: saving the loaded Thinker in checkpoint
    # format (transformers reverses its own key renaming/expert fusing) gives back those tensors.
    thinker.save_pretrained(tmp_path / "resaved")
    resaved = _saved_tensors(tmp_path / "resaved")
    original_thinker = {k: v for k, v in _saved_tensors(checkpoints[family]).items() if k.startswith("thinker.")}
    assert set(resaved) == set(original_thinker)
    different = [k for k in resaved if not torch.equal(resaved[k], original_thinker[k])]
    assert different == [], f"weights not taken from the checkpoint: {different[:5]}"


@pytest.mark.parametrize("family", FAMILIES)
def test_loaded_thinker_runs_a_forward_pass(loaded, family):
    lm = loaded[family]
    ids = lm.processor.tokenizer("Question: what colour is shown?", return_tensors="pt").input_ids
    with torch.no_grad():
        out = lm.thinker(input_ids=ids)
    assert out.logits.shape[:2] == ids.shape
    assert out.logits.shape[-1] == lm.thinker.config.text_config.vocab_size
    assert torch.isfinite(out.logits).all()


# ------------------------------------------------------------------------------------------------
# The processor round trip
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_processor_round_trip_special_tokens(checkpoints, loaded, family):
    exp, lm = EXPECTED[family], loaded[family]
    processor, tok = lm.processor, lm.processor.tokenizer
    assert type(processor).__name__ == exp["processor_cls"]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"

    specials = SPECIAL_TOKENS + (QWEN3_EXTRA_SPECIAL if family == "qwen3_omni" else [])
    for token in specials:
        ids = tok.encode(token, add_special_tokens=False)
        assert len(ids) == 1, f"{token} is not a single token after the round trip: {ids}"
        assert tok.decode(ids) == token
    # The Thinker's placeholder ids are the tokenizer's ids of the placeholder tokens.
    thinker_cfg = json.loads((checkpoints[family] / "config.json").read_text())["thinker_config"]
    assert thinker_cfg[exp["video_id_key"]] == tok.convert_tokens_to_ids(exp["video_token"])
    assert thinker_cfg[exp["audio_id_key"]] == tok.convert_tokens_to_ids(exp["audio_token"])
    assert len(tok) <= lm.thinker.config.text_config.vocab_size

    # Saved and reloaded tokenizer encodes text exactly like the freshly built one.
    fresh = build_processor(family).tokenizer
    assert tok.get_vocab() == fresh.get_vocab()
    assert tok.encode(PROMPT) == fresh.encode(PROMPT)

    fe = processor.feature_extractor
    assert fe.feature_size == 128 and fe.sampling_rate == 16000
    assert processor.video_processor.patch_size == exp["patch"]


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_template_renders_the_published_layout(loaded, family):
    exp, processor = EXPECTED[family], loaded[family].processor
    conversation = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": [{"type": "video", "video": "clip.mp4"}, {"type": "text", "text": PROMPT}]},
    ]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert text == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{exp['video_marker']}{PROMPT}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    audio = [{"role": "user", "content": [{"type": "audio", "audio": "a.wav"}, {"type": "text", "text": "Hi"}]}]
    assert processor.apply_chat_template(audio, add_generation_prompt=False, tokenize=False) == (
        f"<|im_start|>user\n{exp['audio_marker']}Hi<|im_end|>\n"
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_processor_expands_video_and_audio_placeholders(loaded, clips, family):
    from evaluation.media import MediaSettings, build_inputs

    exp, lm = EXPECTED[family], loaded[family]
    tok = lm.processor.tokenizer
    video_id, audio_id = tok.convert_tokens_to_ids(exp["video_token"]), tok.convert_tokens_to_ids(exp["audio_token"])

    inputs, has_audio = build_inputs(lm.processor, family, clips["av"], PROMPT, MediaSettings.defaults(family))
    assert has_audio
    ids = inputs["input_ids"][0]
    merged = int(inputs["video_grid_thw"].prod(-1).sum()) // 4  # spatial merge 2x2
    assert int((ids == video_id).sum()) == merged > 0
    assert int((ids == audio_id).sum()) > 0

    silent, has_audio = build_inputs(lm.processor, family, clips["silent"], PROMPT, MediaSettings.defaults(family))
    assert not has_audio
    assert int((silent["input_ids"][0] == audio_id).sum()) == 0
    assert int((silent["input_ids"][0] == video_id).sum()) == int(silent["video_grid_thw"].prod(-1).sum()) // 4


# ------------------------------------------------------------------------------------------------
# Bad checkpoints
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nonexistent/ckpt", "./no/such/ckpt"])
def test_nonexistent_checkpoint_names_model_checkpoint(path):
    with pytest.raises(ModelLoadError, match=r"model\.checkpoint=.*does not exist"):
        load_model(path, family="qwen2_5_omni", dtype="float32", device="cpu")


def test_folder_that_is_not_a_checkpoint_names_model_checkpoint(tmp_path):
    with pytest.raises(ModelLoadError, match=r"model\.checkpoint="):
        load_model(str(tmp_path), family="qwen2_5_omni", dtype="float32", device="cpu")


def test_family_mismatch_is_a_model_load_error(checkpoints):
    with pytest.raises(ModelLoadError, match=r"model\.family"):
        load_model(str(checkpoints["qwen2_5_omni"]), family="qwen3_omni", dtype="float32", device="cpu")
