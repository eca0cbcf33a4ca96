"""DocOwl1.5 port: architecture against a naive re-statement of the documented design, batching,
generation, and the official checkpoint key names."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vtcompress.integrations.docowl import DocOwlConfig, DocOwlForConditionalGeneration, mplug_owl2_prompt
from vtcompress.integrations.docowl.loader import load_official_state_dict
from vtcompress.integrations.docowl.tiny import build_tiny_docowl, tiny_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_docowl(seed=0)


def page(w: int, h: int, seed: int = 0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    arr = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(arr)


# --- official checkpoint key names (the spec's list, written out independently of the model) -----
def official_keys_and_shapes(cfg: DocOwlConfig) -> dict[str, tuple[int, ...]]:
    h, inter, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    hkv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    vm, hr = cfg.visual_config["visual_model"], cfg.visual_config["visual_hreducer"]
    d, vi, p = vm["hidden_size"], vm["intermediate_size"], (vm["image_size"] // vm["patch_size"]) ** 2
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (v, h),
        "model.norm.weight": (h,),
        "lm_head.weight": (v, h),
    }
    for i in range(cfg.num_hidden_layers):
        a = f"model.layers.{i}."
        shapes[a + "self_attn.q_proj.weight"] = (h, h)
        shapes[a + "self_attn.o_proj.weight"] = (h, h)
        for m in (0, 1):
            shapes[a + f"self_attn.k_proj.multiway.{m}.weight"] = (hkv, h)
            shapes[a + f"self_attn.v_proj.multiway.{m}.weight"] = (hkv, h)
            shapes[a + f"input_layernorm.multiway.{m}.weight"] = (h,)
            shapes[a + f"post_attention_layernorm.multiway.{m}.weight"] = (h,)
        shapes[a + "self_attn.rotary_emb.inv_freq"] = (h // cfg.num_attention_heads // 2,)
        shapes[a + "mlp.gate_proj.weight"] = (inter, h)
        shapes[a + "mlp.up_proj.weight"] = (inter, h)
        shapes[a + "mlp.down_proj.weight"] = (h, inter)
    e = "model.vision_model.embeddings."
    shapes |= {
        e + "cls_token": (1, 1, d),
        e + "position_embedding": (1, 1 + p, d),
        e + "patch_embed.weight": (d, 3, vm["patch_size"], vm["patch_size"]),
        e + "pre_layernorm.weight": (d,),
        e + "pre_layernorm.bias": (d,),
        "model.vision_model.post_layernorm.weight": (d,),
        "model.vision_model.post_layernorm.bias": (d,),
    }
    for j in range(vm["num_hidden_layers"]):
        a = f"model.vision_model.encoder.layers.{j}."
        shapes |= {
            a + "self_attn.query_key_value.weight": (3 * d, d),
            a + "self_attn.query_key_value.bias": (3 * d,),
            a + "self_attn.dense.weight": (d, d),
            a + "self_attn.dense.bias": (d,),
            a + "input_layernorm.weight": (d,),
            a + "input_layernorm.bias": (d,),
            a + "post_attention_layernorm.weight": (d,),
            a + "post_attention_layernorm.bias": (d,),
            a + "mlp.fc1.weight": (vi, d),
            a + "mlp.fc1.bias": (vi,),
            a + "mlp.fc2.weight": (d, vi),
            a + "mlp.fc2.bias": (d,),
        }
    t = "model.vision2text."
    hd = hr["hidden_size"]
    shapes |= {
        t + "vit_eos": (1, 1, h),
        t + "ln_q.weight": (hd,),
        t + "ln_q.bias": (hd,),
        t + "reducer_before.0.weight": (4 * hd, hd, 1, 4),
        t + "reducer_before.0.bias": (4 * hd,),
        t + "reducer.weight": (hd, hd, 1, 4),
        t + "reducer.bias": (hd,),
        t + "visual_fc.weight": (h, hd),
        t + "visual_fc.bias": (h,),
    }
    return shapes


def llama7b_docowl_config() -> DocOwlConfig:
    """The released checkpoints' dimensions (LLaMA-2-7B + ViT-L/14 at 448 px)."""
    return DocOwlConfig(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        visual_config={
            "visual_model": {
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "image_size": 448,
                "patch_size": 14,
            },
            "visual_hreducer": {"hidden_size": 1024, "conv_shape": "1x4"},
        },
    )


@pytest.mark.parametrize("which", ["tiny", "7b"])
def test_official_key_names_load_without_missing_or_unexpected(which):
    cfg = tiny_config() if which == "tiny" else llama7b_docowl_config()
    with torch.device("meta"):
        model = DocOwlForConditionalGeneration(cfg)
        official = {k: torch.empty(s) for k, s in official_keys_and_shapes(cfg).items()}
    load_official_state_dict(model, official.items())  # raises on any mismatch
    port = {k for k in model.state_dict()}
    assert port == {k for k in official if not k.endswith("rotary_emb.inv_freq")}
    if which == "7b":
        assert cfg.tokens_per_view == 257


def test_checkpoint_mismatch_is_reported():
    cfg = tiny_config()
    with torch.device("meta"):
        model = DocOwlForConditionalGeneration(cfg)
        official = {k: torch.empty(s) for k, s in official_keys_and_shapes(cfg).items()}
    official.pop("model.layers.0.self_attn.k_proj.multiway.1.weight")
    official["model.layers.0.self_attn.k_proj.weight"] = torch.empty(1)
    with pytest.raises(
        ValueError, match=r"missing \['model.layers.0.self_attn.k_proj.multiway.1.weight'\].*unexpected"
    ):
        load_official_state_dict(model, official.items())


# --- naive re-statement of the documented architecture -------------------------------------------
def naive_vision(model: DocOwlForConditionalGeneration, pixels: torch.Tensor) -> torch.Tensor:
    """ViT per the spec: fused qkv laid out per head as [q, k, v]; output = post_layernorm(last layer)."""
    vm = model.model.vision_model
    emb = vm.embeddings
    x = F.conv2d(pixels, emb.patch_embed.weight, stride=emb.patch_embed.stride).flatten(2).transpose(1, 2)
    x = torch.cat([emb.cls_token.expand(x.shape[0], -1, -1), x], 1) + emb.position_embedding
    x = emb.pre_layernorm(x)
    for layer in vm.encoder.layers:
        att = layer.self_attn
        heads, hd = att.num_heads, att.head_dim
        y = layer.input_layernorm(x)
        w, b = att.query_key_value.weight, att.query_key_value.bias
        outs = []
        for hh in range(heads):  # rows [h*3*hd, (h*3+1)*hd) are head h's query, then key, then value
            base = hh * 3 * hd
            q = y @ w[base : base + hd].T + b[base : base + hd]
            k = y @ w[base + hd : base + 2 * hd].T + b[base + hd : base + 2 * hd]
            v = y @ w[base + 2 * hd : base + 3 * hd].T + b[base + 2 * hd : base + 3 * hd]
            outs.append(torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd), -1) @ v)
        x = x + att.dense(torch.cat(outs, -1))
        m = layer.mlp
        z = m.fc1(layer.post_attention_layernorm(x))
        x = x + m.fc2(z * torch.sigmoid(1.702 * z))
    return vm.post_layernorm(x)


def naive_hreducer(model: DocOwlForConditionalGeneration, vit_out: torch.Tensor) -> torch.Tensor:
    """H-Reducer per the spec, with the channel-group rearrangement written as explicit loops."""
    r = model.model.vision2text
    x = vit_out[:, 1:]
    b, p, d = x.shape
    g = int(math.isqrt(p))
    x = x.transpose(1, 2).reshape(b, d, g, g)
    y = F.gelu(r.reducer_before[0](x))  # [B, 4D, g, g/4]
    z = torch.empty(b, d, g, g)
    for j in range(g // 4):
        for xg in range(4):  # 'B (X D) H W -> B D H (W X)'
            z[:, :, :, j * 4 + xg] = y[:, xg * d : (xg + 1) * d, :, j]
    out = r.visual_fc(r.reducer(z).flatten(2).transpose(1, 2))
    return torch.cat([out, r.vit_eos.expand(b, -1, -1)], 1)


def naive_decoder(
    model: DocOwlForConditionalGeneration, embeds: torch.Tensor, modality: torch.Tensor
) -> torch.Tensor:
    """One unpadded sequence [T, H]: modality-adaptive LLaMA with eager causal attention -> logits."""
    cfg = model.config
    t, h = embeds.shape
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = h // nh
    img = modality.bool()[:, None]
    inv = 1.0 / (cfg.rope_parameters["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.arange(t).float()[:, None] * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rope(x):  # [heads, T, hd]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps))

    x = embeds
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    for layer in model.model.layers:
        a = layer.self_attn
        n0, n1 = layer.input_layernorm.multiway
        y = torch.where(img, rms(x, n1.weight), rms(x, n0.weight))
        q = (y @ a.q_proj.weight.T).view(t, nh, hd).transpose(0, 1)
        k0, k1 = a.k_proj.multiway
        v0, v1 = a.v_proj.multiway
        k = torch.where(img, y @ k1.weight.T, y @ k0.weight.T).view(t, nkv, hd).transpose(0, 1)
        v = torch.where(img, y @ v1.weight.T, y @ v0.weight.T).view(t, nkv, hd).transpose(0, 1)
        q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(nh // nkv, 0), v.repeat_interleave(nh // nkv, 0)
        s = (q @ k.transpose(1, 2)) / math.sqrt(hd)
        o = torch.softmax(s.masked_fill(~causal, float("-inf")), -1) @ v
        x = x + o.transpose(0, 1).reshape(t, h) @ a.o_proj.weight.T
        p0, p1 = layer.post_attention_layernorm.multiway
        y = torch.where(img, rms(x, p1.weight), rms(x, p0.weight))
        m = layer.mlp
        x = x + (F.silu(y @ m.gate_proj.weight.T) * (y @ m.up_proj.weight.T)) @ m.down_proj.weight.T
    return rms(x, model.model.norm.weight) @ model.lm_head.weight.T


@torch.no_grad()
def test_port_matches_naive_statement_of_the_architecture(tiny):
    model, proc = tiny
    inputs = proc(images=page(230, 150), text=mplug_owl2_prompt("What is the title?"))
    vit = naive_vision(model, inputs["pixel_values"])
    torch.testing.assert_close(model.model.vision_model(inputs["pixel_values"]), vit, rtol=1e-4, atol=1e-5)
    feats = naive_hreducer(model, vit)
    torch.testing.assert_close(model.model.vision2text(vit), feats, rtol=1e-4, atol=1e-5)
    ids, modality = inputs["input_ids"][0], inputs["modality_indicators"][0]
    embeds = model.model.embed_tokens(ids.masked_fill(modality.bool(), 0))
    embeds[modality.bool()] = feats.reshape(-1, feats.shape[-1])
    expected = naive_decoder(model, embeds, modality)
    logits = model(**inputs).logits[0]
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_modality_indicator_switches_norms_and_kv(tiny):
    model, proc = tiny
    inputs = proc(images=page(120, 120), text=mplug_owl2_prompt("What is the title?"))
    assert int(inputs["modality_indicators"].sum()) == 2 * model.config.tokens_per_view  # global + 1 crop
    merged = model.merge_inputs(inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"])
    as_image = model(**merged).logits
    as_text = model(inputs_embeds=merged["inputs_embeds"], attention_mask=merged["attention_mask"]).logits
    torch.testing.assert_close(as_image, model(**inputs).logits)
    assert not torch.allclose(as_image, as_text, atol=1e-4)


@torch.no_grad()
def test_sdpa_equals_eager(tiny):
    model, proc = tiny
    inputs = proc(images=[page(300, 100), page(90, 200, 1)], text=[mplug_owl2_prompt("title?")] * 2)
    sdpa = model(**inputs).logits
    model.config._attn_implementation = "eager"
    try:
        eager = model(**inputs).logits
    finally:
        model.config._attn_implementation = "sdpa"
    m = inputs["attention_mask"].bool()
    torch.testing.assert_close(sdpa[m], eager[m], rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_batch_equals_one_by_one(tiny):
    model, proc = tiny
    imgs = [page(300, 100, 1), page(90, 260, 2), page(150, 150, 3)]
    qs = ["What is the title?", "total", "What is the value of the chart in this year?"]
    prompts = [mplug_owl2_prompt(q) for q in qs]
    batch = proc(images=imgs, text=prompts)
    out = model.generate(**batch, max_new_tokens=6, do_sample=False)
    logits = model(**batch).logits
    n = batch["input_ids"].shape[1]
    for i, (img, p) in enumerate(zip(imgs, prompts)):
        one = proc(images=img, text=p)
        k = one["input_ids"].shape[1]
        torch.testing.assert_close(logits[i, -k:], model(**one).logits[0], rtol=1e-4, atol=1e-4)
        single = model.generate(**one, max_new_tokens=6, do_sample=False)
        assert torch.equal(out[i, n:], single[0, k:])
        assert torch.equal(out[i, :n], batch["input_ids"][i])


@torch.no_grad()
def test_generate_equals_greedy_forward_and_encodes_images_once(tiny):
    model, proc = tiny
    inputs = proc(images=page(400, 130), text=mplug_owl2_prompt("What is the title?"))
    calls = []
    hook = model.model.vision_model.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    finally:
        hook.remove()
    assert len(calls) == 1
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    merged = model.merge_inputs(ids, mask, inputs["pixel_values"], inputs["image_grids"])
    embeds, mod = merged["inputs_embeds"], merged["modality_indicators"]
    for _ in range(5):  # no cache: recompute everything each step
        nxt = model(inputs_embeds=embeds, modality_indicators=mod, use_cache=False).logits[:, -1].argmax(-1)
        embeds = torch.cat([embeds, model.model.embed_tokens(nxt)[:, None]], 1)
        mod = torch.cat([mod, torch.zeros_like(mod[:, :1])], 1)
        ids = torch.cat([ids, nxt[:, None]], 1)
    assert torch.equal(out, ids)


@torch.no_grad()
def test_text_only_generation(tiny):
    model, proc = tiny
    inputs = proc(text=mplug_owl2_prompt("What is the title?", with_image=False))
    assert "pixel_values" not in inputs and inputs["modality_indicators"].sum() == 0
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 3)


def test_placeholder_count_mismatch_names_the_fix(tiny):
    model, proc = tiny
    inputs = proc(images=page(120, 120), text=mplug_owl2_prompt("title?"))
    ids = inputs["input_ids"][0]
    first = int(inputs["modality_indicators"][0].nonzero()[0])
    short = torch.cat([ids[:first], ids[first + 1 :]])[None]  # one placeholder fewer
    with pytest.raises(ValueError, match="DocOwlProcessor"):
        model(input_ids=short, pixel_values=inputs["pixel_values"])


def test_hreducer_selecting_outputs_equals_reducing_selected_groups(tiny):
    """Every H-Reducer token depends only on its own 1x4 group of patches."""
    model, _ = tiny
    r = model.model.vision2text
    g = torch.Generator().manual_seed(3)
    patches = torch.randn(2, 64, 32, generator=g)  # 2 views, 8x8 patches, D=32
    with torch.no_grad():
        full = r.reduce(patches)  # [2, 16, H]
        groups = patches.view(2, 8, 2, 4, 32)  # row, group, member, D
        keep = torch.tensor([0, 3, 5, 6, 15])
        sel = groups.reshape(2, 16, 4, 32)[:, keep]  # [2, 5, 4, D]
        alone = r.reduce_groups(sel.reshape(-1, 4, 32)).view(2, len(keep), -1)
        torch.testing.assert_close(alone, full[:, keep], rtol=1e-5, atol=1e-6)
        # Changing patches outside a group leaves its token unchanged.
        other = patches.clone()
        other[:, 4:] += 1.0  # every patch except the first group of row 0
        assert torch.allclose(r.reduce(other)[:, 0], full[:, 0], atol=1e-6)
        assert not torch.allclose(r.reduce(other)[:, 1], full[:, 1], atol=1e-3)
