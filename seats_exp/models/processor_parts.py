"""Build a real Qwen-Omni processor offline from local parts.

No files can be downloaded here, so the tiny checkpoints get a processor assembled from:
a byte-level BPE tokenizer trained on the fly with the ``tokenizers`` library (with the real
special tokens), the Whisper feature extractor (128 mel bins, 300-s window like the published
checkpoints), the Qwen2-VL image and video processors, and a chat template that renders the
published layout.  Saved with ``save_pretrained`` it is loaded back through ``AutoProcessor`` like
any published checkpoint.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# Special tokens of the published Qwen-Omni tokenizers (the ids differ in the tiny vocabulary).
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
    "<|vision_pad|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
]
QWEN3_EXTRA_SPECIAL = ["<|audio_start|>", "<|audio_end|>", "<|vision_start|>", "<|vision_end|>", "<|audio_pad|>", "<|image_pad|>", "<|video_pad|>"]

# Renders the published prompt layout:
# <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n<|vision_bos|><|VIDEO|><|vision_eos|>{text}<|im_end|>\n<|im_start|>assistant\n
CHAT_TEMPLATE_QWEN2_5 = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'video' or 'video' in item %}{{ '<|vision_bos|><|VIDEO|><|vision_eos|>' }}"
    "{% elif item['type'] == 'image' or 'image' in item %}{{ '<|vision_bos|><|IMAGE|><|vision_eos|>' }}"
    "{% elif item['type'] == 'audio' or 'audio' in item %}{{ '<|audio_bos|><|AUDIO|><|audio_eos|>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# A small corpus so the tiny vocabulary covers the prompts the benchmarks render.
_CORPUS = [
    "Your task is to accurately answer multiple-choice questions based on the given video.",
    "Select the single most accurate answer from the given choices.",
    "Question: Choices: Options: Answer with the option's letter from the given choices directly.",
    "A. B. C. D. (A) (B) (C) (D) A B C D E F The answer is The best option is",
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving",
    "auditory and visual inputs, as well as generating text and speech. Please analyze the video",
    "carefully and select the most appropriate answer from the given options.",
    "What colour is shown? red green blue yellow white black high low tone pitch sound music speech",
    "0 1 2 3 4 5 6 7 8 9 system user assistant",
]


def train_tokenizer(vocab_size: int = 512) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tok


def build_tokenizer(family: str):
    from transformers import Qwen2Tokenizer

    tok = train_tokenizer()
    specials = SPECIAL_TOKENS + (QWEN3_EXTRA_SPECIAL if family == "qwen3_omni" else [])
    if family == "qwen3_omni":
        names = {
            "image_token": "<|image_pad|>", "audio_token": "<|audio_pad|>", "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>",
            "audio_bos_token": "<|audio_start|>", "audio_eos_token": "<|audio_end|>",
        }
    else:
        names = {
            "image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
            "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
            "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
        }
    fast = Qwen2Tokenizer(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        extra_special_tokens=names,
    )
    fast.add_special_tokens({"additional_special_tokens": [t for t in specials if t not in names.values()]})
    fast.add_tokens(list(names.values()), special_tokens=True)
    return fast


def build_processor(family: str):
    """Return a processor of the family's real class, built from local parts."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor, WhisperFeatureExtractor

    tokenizer = build_tokenizer(family)
    patch = 16 if family == "qwen3_omni" else 14
    factor = patch * 2
    pixels = {"min_pixels": 128 * factor * factor, "max_pixels": 768 * factor * factor}
    image_processor = Qwen2VLImageProcessor(patch_size=patch, temporal_patch_size=2, merge_size=2, **pixels)
    video_processor = Qwen2VLVideoProcessor(patch_size=patch, temporal_patch_size=2, merge_size=2, **pixels)
    feature_extractor = WhisperFeatureExtractor(
        feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=300, n_fft=400, return_attention_mask=True
    )
    if family == "qwen3_omni":
        from transformers import Qwen3OmniMoeProcessor as cls
    else:
        from transformers import Qwen2_5OmniProcessor as cls
    return cls(
        image_processor=image_processor,
        video_processor=video_processor,
        feature_extractor=feature_extractor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE_QWEN2_5 if family != "qwen3_omni" else chat_template_qwen3(),
    )


def chat_template_qwen3() -> str:
    return (
        CHAT_TEMPLATE_QWEN2_5.replace("<|vision_bos|><|VIDEO|><|vision_eos|>", "<|vision_start|><|video_pad|><|vision_end|>")
        .replace("<|vision_bos|><|IMAGE|><|vision_eos|>", "<|vision_start|><|image_pad|><|vision_end|>")
        .replace("<|audio_bos|><|AUDIO|><|audio_eos|>", "<|audio_start|><|audio_pad|><|audio_end|>")
    )
