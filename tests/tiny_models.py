"""Tiny random models built offline for engine tests: output is gibberish, every code path is real.

- `build_tiny_llava(dest)`: a LLaVA folder (CLIP vision tower + Llama text model, random weights) with a
  byte-level BPE tokenizer made with `tokenizers`, a CLIPImageProcessor and a LlavaProcessor with a chat
  template, loadable with `AutoProcessor` / `AutoModelForImageTextToText`.
- `build_tiny_llava_gguf(hf_dir, dest)`: that model as a GGUF text model + a GGUF mmproj (CLIP "mlp"
  projector) for llama.cpp, made with llama.cpp's own converters from `vendor/llama.cpp`
  (fetched by `scripts/fetch_llama_convert.sh`).
- `build_tiny_whisper(dest)`: a Whisper folder (random weights, 16 mel bins) for the speech path.

All are cached: a finished folder (marked by a `.done` file) is reused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENDOR_LLAMA = ROOT / "vendor" / "llama.cpp"
IMAGE_SIZE = 32
PATCH_SIZE = 8
N_IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # CLS dropped ("default" feature selection)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}</s>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Describe this image in one short sentence, please.",
    "What is in the picture? A red square on a white background.",
    "Hello! How are you today? I am a tiny random model.",
    "user assistant system <|user|> <|assistant|> <|system|>",
]


def converter_available() -> bool:
    return (VENDOR_LLAMA / "convert_hf_to_gguf.py").is_file() and (VENDOR_LLAMA / "gguf-py" / "gguf").is_dir()


def _build_tokenizer(dest: Path) -> None:
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tf: Any = transformers  # transformers is only partly typed

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = tf.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(dest)


def build_tiny_llava(dest: Path) -> Path:
    """A tiny random LLaVA in `dest` (reused when already built); returns `dest`."""
    import torch
    import transformers

    tf: Any = transformers
    if (dest / ".done").is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    _build_tokenizer(dest)
    tokenizer = tf.AutoTokenizer.from_pretrained(dest)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = tf.CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=32,
    )
    text = tf.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config = tf.LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    torch.manual_seed(0)
    model = tf.LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(dest)
    image_processor = tf.CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor = tf.LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
    )
    processor.save_pretrained(dest)
    (dest / ".done").write_text("ok\n")
    return dest


# convert_hf_to_gguf.py recognises a BPE pre-tokenizer by hashing token ids of a probe text, so a freshly
# trained vocabulary is never "known". Ours is plain GPT-2 byte-level BPE: tell the converter so. It also
# imports sentencepiece before looking for a tokenizer.model: skip that (no sentencepiece needed).
_CONVERT_TEXT = """
import sys
from conversion.base import TextModel
TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
_spm = TextModel._create_vocab_sentencepiece
def _no_spm(self):
    if not (self.dir_model / "tokenizer.model").is_file():
        raise FileNotFoundError("no tokenizer.model")
    return _spm(self)
TextModel._create_vocab_sentencepiece = _no_spm
import convert_hf_to_gguf
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[1:]]
convert_hf_to_gguf.main()
"""


# The LLaVA-1.5 encoder converter expects transformers 4's CLIPVisionModel layout (`model.vision_model.*`);
# transformers 5 flattened it. Hand the script a wrapper with the old layout.
_CONVERT_ENCODER = """
import runpy, sys, torch
from transformers import CLIPVisionModel
class _Clip(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.vision_model = inner
_load = CLIPVisionModel.from_pretrained.__func__
CLIPVisionModel.from_pretrained = classmethod(lambda cls, path, *a, **k: _Clip(_load(cls, path, *a, **k)).eval())
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def _run_vendor(args: list[str]) -> None:
    env = dict(os.environ)
    paths = [str(VENDOR_LLAMA / "gguf-py"), str(VENDOR_LLAMA)]  # the converter's own gguf-py wins over PyPI's
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    env.setdefault("NO_LOCAL_GGUF", "")
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{args[:2]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def _export_vision(hf_dir: Path, work: Path) -> Path:
    """The LLaVA's CLIP tower as a CLIPVisionModel folder + its projector as `llava.projector`."""
    import torch
    import transformers

    tf: Any = transformers
    model = tf.LlavaForConditionalGeneration.from_pretrained(hf_dir)
    config = model.config
    tower = tf.CLIPVisionModel(config.vision_config)
    tower.load_state_dict(model.model.vision_tower.state_dict())
    tower.save_pretrained(work)
    cfg = json.loads((work / "config.json").read_text())
    cfg["vision_feature_layer"] = config.vision_feature_layer  # the legacy converter cuts the tower there
    (work / "config.json").write_text(json.dumps(cfg, indent=2))
    projector = {
        f"multi_modal_projector.{k}": v.float().contiguous()
        for k, v in model.model.multi_modal_projector.state_dict().items()
    }
    torch.save(projector, work / "llava.projector")
    return work


def build_tiny_llava_gguf(hf_dir: Path, dest: Path) -> tuple[Path, Path]:
    """`hf_dir` (from build_tiny_llava) as (text GGUF, mmproj GGUF) in `dest`, reused when already built.

    The text model goes through convert_hf_to_gguf.py. Its `--mmproj` mode only knows the Pixtral flavour of
    LlavaForConditionalGeneration, so the CLIP tower + MLP projector go through llama.cpp's converter for
    LLaVA-1.5 style encoders (tools/mtmd/legacy-models/convert_image_encoder_to_gguf.py, projector "mlp").
    """
    if not converter_available():
        raise FileNotFoundError(f"llama.cpp converter missing in {VENDOR_LLAMA}: run scripts/fetch_llama_convert.sh")
    text_out, mmproj_out = dest / "tiny-llava-f32.gguf", dest / "mmproj-tiny-llava-f32.gguf"
    if (dest / ".done").is_file():
        return text_out, mmproj_out
    dest.mkdir(parents=True, exist_ok=True)
    _run_vendor(["-c", _CONVERT_TEXT, str(hf_dir), "--outfile", str(text_out), "--outtype", "f32"])
    work = _export_vision(hf_dir, dest / "vision")
    encoder = VENDOR_LLAMA / "tools" / "mtmd" / "legacy-models" / "convert_image_encoder_to_gguf.py"
    _run_vendor(
        [
            "-c",
            _CONVERT_ENCODER,
            str(encoder),
            "-m",
            str(work),
            "--clip-model-is-vision",
            "--llava-projector",
            str(work / "llava.projector"),
            "--projector-type",
            "mlp",
            "--use-f32",
            "-o",
            str(work),
        ]
    )
    (work / "mmproj-model-f32.gguf").replace(mmproj_out)
    (dest / ".done").write_text("ok\n")
    return text_out, mmproj_out


WHISPER_SPECIAL_TOKENS = [
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]


def build_tiny_whisper(dest: Path) -> Path:
    """A tiny random Whisper in `dest` (reused when already built): byte-level BPE tokenizer made with
    `tokenizers`, a 16-mel WhisperFeatureExtractor, one encoder and one decoder layer. Loadable with
    `AutoProcessor` / `AutoModelForSpeechSeq2Seq`; returns `dest`."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tf: Any = transformers
    if (dest / ".done").is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tok.model.save(str(dest))  # vocab.json + merges.txt
    tokenizer = tf.WhisperTokenizer(vocab=str(dest / "vocab.json"), merges=str(dest / "merges.txt"))
    tokenizer.add_special_tokens({"additional_special_tokens": WHISPER_SPECIAL_TOKENS})
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    sot = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    config = tf.WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=16,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=64,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    torch.manual_seed(0)
    model = tf.WhisperForConditionalGeneration(config).eval()
    generation = model.generation_config
    generation.decoder_start_token_id = sot
    generation.eos_token_id = eot
    generation.pad_token_id = eot
    generation.no_timestamps_token_id = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    generation.is_multilingual = False
    generation.forced_decoder_ids = None
    model.save_pretrained(dest)
    feature_extractor = tf.WhisperFeatureExtractor(feature_size=16)
    tf.WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(dest)
    (dest / ".done").write_text("ok\n")
    return dest
