import pytest
import torch
from safetensors.torch import load_file, save_file

from model import CheckpointError, Clover, create_model, get_model_config, list_models
from model.heads import VideoProjection
from tests.model.helpers import TINY_OVERRIDES, tiny_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tiny_model().eval()


def frames(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    return torch.randn(batch, cfg.num_frames, 3, cfg.image_size, cfg.image_size, generator=g)


def test_presets_listed_and_buildable():
    assert {"clover-tiny", "clover-base"} <= set(list_models())
    base = get_model_config("clover-base")
    assert (base.num_frames, base.image_size, base.embed_dim) == (8, 224, 768)
    assert base.video.depths == (2, 2, 18, 2) and base.text.num_layers == 12
    with pytest.raises(ValueError, match="unknown model"):
        get_model_config("clover-huge")
    with pytest.raises(ValueError, match="unknown"):
        create_model("clover-tiny", video={"depth": [1]})


def test_documented_shapes_and_unit_norm(model):
    x = frames(model)
    emb, tokens = model.encode_video(x, return_tokens=True)
    k, c = model.video_token_shape
    assert emb.shape == (2, model.config.embed_dim) and tokens.shape == (2, k, c)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    text = model.tokenize(["a small red circle moves left", "a large cross stays still"])
    temb, hidden = model.encode_text(**text, return_hidden=True)
    assert temb.shape == (2, model.config.embed_dim)
    assert hidden.shape == (2, text["input_ids"].shape[1], model.text_encoder.config.hidden_size)
    assert torch.allclose(temb.norm(dim=-1), torch.ones(2), atol=1e-5)
    fused, cls = model.fuse(tokens, hidden, text["attention_mask"])
    assert fused.shape == (2, k + hidden.shape[1], hidden.shape[2])
    mask = text["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(cls, (fused[:, k:] * mask).sum(1) / mask.sum(1))  # tiny pools by mean
    assert model.mlm_logits(fused[:, k:]).shape == (2, hidden.shape[1], model.tokenizer.vocab_size)
    assert model.match_score(tokens, "a red circle").shape == (2,)
    scores = model.answer_choice(tokens, ["what does it do?"] * 2, [["moves left", "grows", "shrinks"]] * 2)
    assert scores.shape == (2, 3)


def test_eval_mode_is_deterministic(model):
    x = frames(model)
    assert torch.equal(model.encode_video(x), model.encode_video(x))
    text = model.tokenize(["a white square grows"])
    assert torch.equal(model.encode_text(**text), model.encode_text(**text))


def test_padding_does_not_change_text_or_fusion(model):
    short = model.tokenize(["a red circle"])
    padded = model.tokenize(["a red circle", "a large purple triangle moves up and then shrinks"])
    assert torch.allclose(model.encode_text(**short)[0], model.encode_text(**padded)[0], atol=1e-5)
    tokens = model.encode_video(frames(model, batch=1), return_tokens=True)[1]
    one = model.match_score(tokens, ["a red circle"])
    two = model.match_score(tokens.repeat(2, 1, 1), ["a red circle", "a large purple triangle moves up and then shrinks"])
    assert torch.allclose(one, two[:1], atol=1e-5)


def test_mask_token_replaces_exactly_the_masked_cells_in_every_frame(model):
    captured = {}
    handle = model.video_encoder.swin.pos_drop.register_forward_hook(lambda m, i, o: captured.update(x=i[0].clone()))
    x = frames(model, batch=1)
    hp, wp = model.mask_grid
    mask = torch.zeros(1, hp, wp, dtype=torch.bool)
    mask[0, 0, 1] = mask[0, 2, 3] = True
    model.encode_video(x)
    clean = captured["x"]
    model.encode_video(x, video_mask=mask)
    masked = captured["x"]
    handle.remove()
    assert masked.shape[1] == model.video_encoder.patch_grid[0] > 1  # several time steps
    token = model.video_encoder.mask_token
    for t in range(masked.shape[1]):
        for h in range(hp):
            for w in range(wp):
                if mask[0, h, w]:
                    assert torch.equal(masked[0, t, h, w], token.detach())
                else:
                    assert torch.equal(masked[0, t, h, w], clean[0, t, h, w])


def test_fusion_layers_start_as_the_text_encoders_first_three():
    m = tiny_model()
    assert len(m.fusion.layers) == 3
    for fusion_layer, text_layer in zip(m.fusion.layers, m.text_encoder.encoder.layer[:3], strict=True):
        fs, ts = fusion_layer.state_dict(), text_layer.state_dict()
        assert fs.keys() == ts.keys()
        assert all(torch.equal(fs[k], ts[k]) for k in fs)
    # a copy, not shared: training fusion must not move the text tower
    assert m.fusion.layers[0].attention.self.query.weight.data_ptr() != m.text_encoder.encoder.layer[0].attention.self.query.weight.data_ptr()


def test_save_load_round_trip_is_bit_identical(model, tmp_path):
    model.set_answer_vocab(["red", "green", "blue"])
    model.eval()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = Clover.from_pretrained(tmp_path / "ckpt")
    x = frames(model)
    e1, t1 = model.encode_video(x, return_tokens=True)
    e2, t2 = loaded.encode_video(x, return_tokens=True)
    assert torch.equal(e1, e2) and torch.equal(t1, t2)
    q = ["what color is the circle?"]
    assert torch.equal(model.answer_open(t1[:1], q), loaded.answer_open(t2[:1], q))
    assert loaded.answer_vocab == ["red", "green", "blue"]
    assert loaded.tokenizer.vocab_size == model.tokenizer.vocab_size > 30000


def test_missing_tensor_is_named(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    state = load_file(str(weights))
    del state["fusion.video_proj.weight"]
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match="fusion.video_proj.weight"):
        Clover.from_pretrained(tmp_path / "ckpt")


def test_wrong_shape_is_named(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    state = load_file(str(weights))
    state["video_proj.mlp.0.bias"] = torch.zeros(7)
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match=r"video_proj.mlp.0.bias.*\(7,\)"):
        Clover.from_pretrained(tmp_path / "ckpt")


def test_open_qa_without_head_is_a_clear_error(model):
    fresh = tiny_model().eval()
    tokens = torch.zeros(1, *fresh.video_token_shape)
    with pytest.raises(RuntimeError, match="no open-ended QA head"):
        fresh.answer_open(tokens, ["what color?"])


def test_choice_head_reads_the_candidate_positions(model):
    texts = model.choice_texts(["what does it do?"], [["moves left", "grows"]])
    first = texts["input_ids"][0][texts["second_mask"][0].bool()]
    assert model.tokenizer.decode(first) == "moves left [SEP]"
    tokens = torch.randn(1, *model.video_token_shape)
    fused = model.fuse(tokens.repeat(2, 1, 1), model.encode_text(texts["input_ids"], texts["attention_mask"],
                                                                 return_hidden=True)[1], texts["attention_mask"])[0]
    text_part = fused[:, tokens.shape[1]:]
    pooled = model.pool_text(text_part, texts["second_mask"])
    expected = model.choice_head(pooled).view(-1, 2)
    torch.testing.assert_close(model.choice_logits(tokens, texts, 2), expected)


def test_text_dropout_is_applied_to_the_pretrained_tower():
    """The dropout of the config reaches the nn.Dropout modules of the loaded MiniLM (not only its config)."""
    tower = create_model("clover-tiny", text={"dropout": 0.3}).text_encoder
    rates = {m.p for m in tower.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates == {0.3}
    assert create_model("clover-tiny").config.text.dropout == 0.0  # the tiny preset trains without dropout


def test_clip_token_is_one_more_video_position_and_survives_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = tiny_model().eval()
    tokens = torch.randn(2, *model.video_token_shape)
    text = model.tokenize(["a red circle", "a blue square grows"])
    _, hidden = model.encode_text(text["input_ids"], text["attention_mask"], return_hidden=True)
    before, _ = model.fuse(tokens, hidden, text["attention_mask"])
    model.add_clip_token()
    after, pooled = model.fuse(tokens, hidden, text["attention_mask"])
    assert after.shape == before.shape  # the clip position is attended to, not returned
    assert not torch.allclose(after, before)
    with torch.no_grad():  # the clip token carries the video head's output
        model.video_proj.mlp[-1].bias.add_(torch.randn(model.config.embed_dim))
    assert not torch.allclose(model.fuse(tokens, hidden, text["attention_mask"])[0], after)
    loaded = Clover.from_pretrained(model.save_pretrained(tmp_path / "ckpt")).eval()
    assert loaded.config.fusion.clip_token
    torch.testing.assert_close(loaded.fuse(tokens, hidden, text["attention_mask"])[1],
                               model.fuse(tokens, hidden, text["attention_mask"])[1])


def test_repeated_texts_are_encoded_once_with_the_same_states_and_gradients():
    torch.manual_seed(0)
    model = tiny_model(text={**TINY_OVERRIDES["text"], "dropout": 0.0}).train()
    texts = model.tokenize(["how many objects?", "what shape is the red object?", "how many objects?"])
    calls = []
    hook = model.text_encoder.register_forward_hook(lambda module, args, kwargs, out: calls.append(
        len(kwargs["input_ids"])), with_kwargs=True)
    embedding, hidden = model.encode_text(texts["input_ids"], texts["attention_mask"], return_hidden=True)
    real = texts["attention_mask"][..., None]  # padding states are not compared: one-by-one texts have none
    (embedding.sum() + (hidden * real).square().sum()).backward()
    deduplicated = {n: p.grad.clone() for n, p in model.text_encoder.named_parameters() if p.grad is not None}
    assert calls == [2]
    model.zero_grad()
    one_by_one = [model.encode_text(texts["input_ids"][i : i + 1], texts["attention_mask"][i : i + 1],
                                    return_hidden=True) for i in range(3)]
    for i, (_, h) in enumerate(one_by_one):
        torch.testing.assert_close(hidden[i, : h.shape[1]], h[0])
    sum(e.sum() + (h * real[i]).square().sum() for i, (e, h) in enumerate(one_by_one)).backward()
    for name, grad in deduplicated.items():
        torch.testing.assert_close(grad, model.text_encoder.get_parameter(name).grad, rtol=1e-4, atol=1e-4, msg=name)
    hook.remove()
    dropped = tiny_model(text={**TINY_OVERRIDES["text"], "dropout": 0.5}).train()
    _, hidden = dropped.encode_text(texts["input_ids"], texts["attention_mask"], return_hidden=True)
    assert not torch.allclose(hidden[0], hidden[2])  # dropout draws its own noise per row


def one_way_reference(model, tokens, hidden, mask):
    """One-way fusion written as the single-stream BertLayers with the video-to-text attention block masked."""
    fusion = model.fusion
    video = fusion.embed_video(tokens)
    clip = fusion.clip_proj(model.video_proj(tokens)) + fusion.token_type.weight[1]
    video = torch.cat([clip[:, None], video], dim=1)
    k = video.shape[1]
    keep = torch.cat([torch.ones(len(mask), k), mask.float()], dim=1)  # (B, K+L) keys
    allowed = keep[:, None, None, :].repeat(1, 1, k + mask.shape[1], 1)
    allowed[:, :, :k, k:] = 0  # video queries never see text keys
    additive = (1.0 - allowed) * torch.finfo(torch.float32).min
    states = torch.cat([video, hidden], dim=1)
    for layer in fusion.layers:
        states = layer(states, attention_mask=additive)
        states = states[0] if isinstance(states, tuple) else states
    return states[:, 1:]


def test_one_way_fusion_is_the_single_stream_with_video_to_text_masked_and_shares_each_clip(tmp_path):
    torch.manual_seed(0)
    model = tiny_model(fusion={"video_attends_text": False, "clip_token": True}).eval()
    tokens = torch.randn(2, *model.video_token_shape)
    text = model.tokenize(["a red circle", "a blue square grows", "what shape is the small object?"])
    with torch.no_grad():
        _, hidden = model.encode_text(text["input_ids"], text["attention_mask"], return_hidden=True)
    clip_of_text = torch.tensor([1, 0, 1])
    fused, pooled = model.fuse(tokens, hidden, text["attention_mask"], video_index=clip_of_text)
    k = model.video_token_shape[0]
    reference = one_way_reference(model, tokens[clip_of_text], hidden, text["attention_mask"])
    real = torch.cat([torch.ones(3, k, dtype=torch.bool), text["attention_mask"].bool()], dim=1)
    assert not real.all()  # the texts differ in length: some positions are padding
    torch.testing.assert_close(fused[real], reference[real])
    assert not fused[~real].any()  # padding runs through no layer and comes out as 0
    # Running only the real text positions gives every fusion weight the single stream's gradient.
    model.fuse(tokens, hidden, text["attention_mask"], video_index=clip_of_text)[1].square().sum().backward()
    packed = {name: p.grad.clone() for name, p in model.fusion.layers.named_parameters()}
    model.zero_grad()
    reference = one_way_reference(model, tokens[clip_of_text], hidden, text["attention_mask"])
    model.pool_text(reference[:, k:], text["attention_mask"]).square().sum().backward()
    for name, p in model.fusion.layers.named_parameters():
        torch.testing.assert_close(packed[name], p.grad, msg=name)
    model.zero_grad()
    torch.testing.assert_close(fused[0, :k], fused[2, :k])  # a clip's video states whatever the text
    # The shared clip gets the gradient the expanded batch gives it.
    live = tokens.clone().requires_grad_(True)
    model.fuse(live, hidden, text["attention_mask"], video_index=clip_of_text)[1].square().sum().backward()
    expanded = tokens.clone().requires_grad_(True)
    model.fuse(expanded[clip_of_text], hidden, text["attention_mask"])[1].square().sum().backward()
    torch.testing.assert_close(live.grad, expanded.grad)
    loaded = Clover.from_pretrained(model.save_pretrained(tmp_path / "ckpt")).eval()
    assert not loaded.config.fusion.video_attends_text
    torch.testing.assert_close(loaded.fuse(tokens, hidden, text["attention_mask"], video_index=clip_of_text)[1],
                               pooled)


def test_video_index_pairs_each_text_with_its_clip_in_the_single_stream(model):
    tokens = torch.randn(2, *model.video_token_shape)
    text = model.tokenize(["a red circle", "a blue square grows", "a cross"])
    _, hidden = model.encode_text(text["input_ids"], text["attention_mask"], return_hidden=True)
    clip_of_text = torch.tensor([1, 1, 0])
    torch.testing.assert_close(model.fuse(tokens, hidden, text["attention_mask"], video_index=clip_of_text)[0],
                               model.fuse(tokens[clip_of_text], hidden, text["attention_mask"])[0])
    with pytest.raises(AssertionError):  # the single stream's video states do depend on the text
        torch.testing.assert_close(model.fuse(tokens[[1, 1]], hidden[:2], text["attention_mask"][:2])[0][0, :5],
                                   model.fuse(tokens[[1, 1]], hidden[:2], text["attention_mask"][:2])[0][1, :5])


def test_conv_stem_keeps_the_token_grid_and_its_statistics_survive_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    patch, conv = tiny_model().eval(), tiny_model(video={**TINY_OVERRIDES["video"], "stem": "conv"})
    x = frames(patch)
    assert conv.encode_video(x, return_tokens=True)[1].shape == patch.encode_video(x, return_tokens=True)[1].shape
    conv.train()
    conv.encode_video(x)  # one training forward moves BatchNorm's running statistics
    conv.eval()
    loaded = Clover.from_pretrained(conv.save_pretrained(tmp_path / "ckpt")).eval()
    torch.testing.assert_close(loaded.encode_video(x), conv.encode_video(x))
    loaded.video_encoder.requires_grad_(False)  # frozen, as a QA or retrieval fine-tune may leave it
    loaded.train()
    assert not loaded.video_encoder.training and loaded.fusion.training
    loaded.encode_video(x)
    torch.testing.assert_close(loaded.encode_video(x), conv.eval().encode_video(x))  # statistics unchanged


def test_pool_stem_keeps_the_token_grid_ignores_a_shift_inside_a_pool_and_survives_a_checkpoint(tmp_path):
    from model.video_encoder import PoolStem

    torch.manual_seed(0)
    patch, pool = tiny_model().eval(), tiny_model(video={**TINY_OVERRIDES["video"], "stem": "pool"}).eval()
    x = frames(patch)
    assert pool.encode_video(x, return_tokens=True)[1].shape == patch.encode_video(x, return_tokens=True)[1].shape
    loaded = Clover.from_pretrained(pool.save_pretrained(tmp_path / "ckpt")).eval()
    torch.testing.assert_close(loaded.encode_video(x), pool.encode_video(x))
    # a bright pixel moved inside one 2x2 pooling cell: with a point filter the stem's output is unchanged
    c = torch.zeros(1, 3, 1, 8, 8)
    c[..., 2, 2] = 1.0
    d = torch.zeros(1, 3, 1, 8, 8)
    d[..., 3, 3] = 1.0  # rows and columns 2-3 form one pooling cell
    point = PoolStem((1, 2, 2), embed_dim=4, width=2).eval()
    with torch.no_grad():
        point.layers[0].weight.zero_()
        point.layers[0].weight[:, :, :, 1, 1] = 1.0  # a 1x1 filter inside the 3x3 kernel
        point.layers[0].bias.zero_()
    torch.testing.assert_close(point(c), point(d))
    e = torch.zeros(1, 3, 1, 8, 8)
    e[..., 4, 4] = 1.0  # the next cell: the stem sees the move
    assert not torch.allclose(point(c), point(e))


def test_pool_stem_per_frame_2d_forward_equals_its_3d_layers_in_values_and_gradients():
    from model.video_encoder import PoolStem

    torch.manual_seed(0)
    stem = PoolStem((2, 8, 8), embed_dim=8, width=4)
    x = torch.randn(2, 3, 4, 16, 12)  # not square: a swapped height and width would show
    reference_x, x2d = x.clone().requires_grad_(), x.clone().requires_grad_()
    reference = stem.layers(reference_x)  # the 3-D layers that hold the parameters
    reference.square().sum().backward()
    reference_grads = [p.grad.clone() for p in stem.parameters()]
    stem.zero_grad()
    out = stem(x2d)
    out.square().sum().backward()
    assert out.shape == reference.shape == (2, 8, 2, 2, 1)
    torch.testing.assert_close(out, reference)
    torch.testing.assert_close(x2d.grad, reference_x.grad)
    for grad, expected in zip([p.grad for p in stem.parameters()], reference_grads, strict=True):
        torch.testing.assert_close(grad, expected)


def test_stem_global_adds_the_stems_per_frame_max_to_every_token_and_keeps_the_grid(tmp_path):
    torch.manual_seed(0)
    video = {**TINY_OVERRIDES["video"], "stem": "pool", "stem_width": 8, "stem_global": True}
    model = tiny_model(video=video).eval()
    encoder = model.video_encoder
    assert encoder.swin.patch_embed.proj.layers[0].out_channels == 8
    x = frames(model)
    tokens = encoder(x)
    assert tokens.shape == (2, encoder.num_tokens, encoder.out_dim)
    with torch.no_grad():
        stem = encoder.swin.patch_embed(x.permute(0, 2, 1, 3, 4))  # (B, Tp, Hp, Wp, C0)
        encoder.stem_global.weight.zero_()
        encoder.stem_global.bias.zero_()
        swin_only = encoder(x)
    added = torch.nn.Linear(encoder.stem_global.in_features, encoder.stem_global.out_features)
    t, h, w = encoder.token_grid
    expected = swin_only.view(2, t, h * w, -1)  # the same vector added to each token of one time step
    # with the projection zeroed the tokens are the Swin's alone; any other projection adds proj(max over space)
    with torch.no_grad():
        encoder.stem_global.load_state_dict(added.state_dict())
        again = encoder(x).view(2, t, h * w, -1)
    torch.testing.assert_close(again - expected, added(stem.amax(dim=(2, 3)))[:, :, None, :].expand_as(expected))
    loaded = Clover.from_pretrained(model.save_pretrained(tmp_path / "ckpt")).eval()
    torch.testing.assert_close(loaded.video_encoder(x), encoder(x))


def test_conv_stem_needs_a_square_power_of_two_patch():
    with pytest.raises(ValueError, match="power-of-two"):
        tiny_model(video={**TINY_OVERRIDES["video"], "patch_size": [2, 6, 6], "stem": "conv"})
    with pytest.raises(ValueError, match="power-of-two"):
        tiny_model(video={**TINY_OVERRIDES["video"], "patch_size": [2, 6, 6], "stem": "pool"})
    with pytest.raises(ValueError, match="stem must be"):
        tiny_model(video={**TINY_OVERRIDES["video"], "stem": "resnet"})


def test_video_poolings_see_what_they_promise():
    tokens = torch.randn(2, 4, 8)
    moved = tokens.roll(1, dims=1)  # the same tokens at other positions
    for pooling, position_blind in [("mean", True), ("flatten", False), ("flatten+max", False)]:
        head = VideoProjection(8, 16, 6, pooling=pooling, num_tokens=4).eval()
        assert head(tokens).shape == (2, 6)
        assert torch.allclose(head(tokens), head(moved), atol=1e-6) == position_blind, pooling
    # flatten+max: the max path has its own weights, shared by every position
    head = VideoProjection(8, 16, 6, pooling="flatten+max", num_tokens=4)
    assert head.mlp[0].in_features == 8 * 5
    with pytest.raises(ValueError, match="video pooling"):
        VideoProjection(8, 16, 6, pooling="max")
