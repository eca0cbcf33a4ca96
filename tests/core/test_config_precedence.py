"""Who decides a config's values: options the caller passes explicitly win; a passed config keeps
its own values otherwise and is never changed; ``ratio=None`` means "the config's ratio"."""

import dataclasses
import math

import pytest
import torch

import vtcompress
from tests.conftest import inputs_for
from vtcompress import GlobalCom2Config, TokenCorrConfig
from vtcompress.registry import explicit_options, make_config

DEFAULT_RATIO = 0.25  # every built-in config's documented default
# ...but pyramiddrop's, whose ratio is its first stage's share: 0.5 in the paper.
DEFAULTS = {"pyramiddrop": 0.5}


@pytest.mark.parametrize("method", vtcompress.available_methods())
def test_every_builtin_config_defaults_to_a_quarter(method):
    assert make_config(method).ratio == DEFAULTS.get(method, DEFAULT_RATIO)
    assert make_config(method, ratio=None).ratio == DEFAULTS.get(method, DEFAULT_RATIO)


def test_make_config_precedence():
    assert make_config("globalcom2", ratio=0.5).ratio == 0.5
    passed = GlobalCom2Config(ratio=0.5, allocation="paper")
    assert make_config(passed) is passed
    assert make_config(passed, ratio=None) is passed
    changed = make_config(passed, ratio=0.3, alpha=0.7)
    assert (changed.ratio, changed.alpha, changed.allocation) == (0.3, 0.7, "paper")
    assert (passed.ratio, passed.alpha, passed.allocation) == (0.5, 0.5, "paper")  # untouched


def test_unknown_option_for_a_config_names_the_options():
    with pytest.raises(TypeError, match="GlobalCom2Config has no option.*its options are"):
        make_config(GlobalCom2Config(), budget=3)


def test_explicit_options():
    assert explicit_options(None, None) == {}
    assert explicit_options(0.5, {"alpha": 0.7}) == {"alpha": 0.7, "ratio": 0.5}
    assert explicit_options(None, {"ratio": 0.4}) == {"ratio": 0.4}
    with pytest.raises(ValueError, match="ratio given twice"):
        explicit_options(0.5, {"ratio": 0.4})


def test_compress_keeps_a_passed_config(model):
    passed = GlobalCom2Config(ratio=0.5)
    assert vtcompress.compress(model, passed).config is passed
    handle = vtcompress.compress(model, passed, ratio=0.3)
    assert handle.config.ratio == 0.3 and passed.ratio == 0.5


# (method, ratio, method_options) -> (ratio, {option: value}) of the attached config
CASES = {
    "name, no ratio": ("globalcom2", None, None, DEFAULT_RATIO, {}),
    "name, ratio": ("globalcom2", 0.5, None, 0.5, {}),
    "name, options": ("globalcom2", None, {"alpha": 0.7}, DEFAULT_RATIO, {"alpha": 0.7}),
    "name, ratio in options": ("globalcom2", None, {"ratio": 0.4}, 0.4, {}),
    "config, no ratio": (
        GlobalCom2Config(ratio=0.5, allocation="paper"),
        None,
        None,
        0.5,
        {"allocation": "paper"},
    ),
    "config, ratio": (
        GlobalCom2Config(ratio=0.5, allocation="paper"),
        0.3,
        None,
        0.3,
        {"allocation": "paper"},
    ),
    "config, options": (
        GlobalCom2Config(ratio=0.5, alpha=0.2),
        None,
        {"alpha": 0.7},
        0.5,
        {"alpha": 0.7, "allocation": "exact"},
    ),
}


@pytest.fixture(scope="module")
def tiny_llava_path(tmp_path_factory):
    from vtcompress.integrations.llava_next.tiny import save_tiny_llava_next

    return str(save_tiny_llava_next(tmp_path_factory.mktemp("llava") / "tiny"))


@pytest.mark.parametrize("case", CASES)
def test_load_compressed_llava_precedence(tiny_llava_path, case):
    method, ratio, options, want_ratio, want = CASES[case]
    before = dataclasses.asdict(method) if not isinstance(method, str) else None
    model, _ = vtcompress.load_compressed_llava(tiny_llava_path, method, ratio, options)
    config = vtcompress.get_handle(model).config
    assert config.method == "globalcom2" and config.ratio == want_ratio
    assert {k: getattr(config, k) for k in want} == want
    if before is not None:  # the caller's config object is unchanged
        assert dataclasses.asdict(method) == before


@torch.no_grad()
def test_a_passed_config_runs_at_its_own_ratio(tiny_llava_path):
    model, processor = vtcompress.load_compressed_llava(tiny_llava_path, method=GlobalCom2Config(ratio=0.5))
    model(**inputs_for(processor, [(672, 672)]))
    image = vtcompress.get_handle(model).last_stats.images[0]
    assert image.tokens_after == math.floor(0.5 * image.tokens_before)


def test_loaders_check_options_before_loading(tmp_path):
    missing = str(tmp_path / "missing")  # loading it would raise OSError / FileNotFoundError
    with pytest.raises(ValueError, match="ratio given twice"):
        vtcompress.load_compressed_llava(missing, ratio=0.5, method_options={"ratio": 0.4})
    with pytest.raises(TypeError, match="no option"):
        vtcompress.load_compressed_docowl(missing, method=GlobalCom2Config(), method_options={"budget": 3})


@pytest.fixture(scope="module")
def tiny_docowl_path(tmp_path_factory):
    from vtcompress.integrations.docowl.tiny import save_tiny_docowl

    return str(save_tiny_docowl(tmp_path_factory.mktemp("docowl"), seed=0))


@pytest.mark.parametrize(
    "method, ratio, options, want_ratio, want",
    [
        ("tokencorr", None, None, DEFAULT_RATIO, {}),
        ("tokencorr", 0.5, None, 0.5, {}),
        (TokenCorrConfig(ratio=0.5, allocation="adaptive"), None, None, 0.5, {"allocation": "adaptive"}),
        (TokenCorrConfig(ratio=0.5, allocation="adaptive"), 0.3, None, 0.3, {"allocation": "adaptive"}),
    ],
)
def test_load_compressed_docowl_precedence(tiny_docowl_path, method, ratio, options, want_ratio, want):
    model, _ = vtcompress.load_compressed_docowl(tiny_docowl_path, method, ratio, options)
    config = vtcompress.get_handle(model).config
    assert config.method == "tokencorr" and config.ratio == want_ratio
    assert {k: getattr(config, k) for k in want} == want
    if not isinstance(method, str):
        assert method.ratio == 0.5


# --- options from text (command line, demo page) ---------------------------------------------
def test_parse_options_reads_each_value_as_its_fields_type():
    from vtcompress.registry import parse_options

    parsed = parse_options(
        "pitome",
        ["metric=projected", "steps= 2", "proportional_attention=yes", "layer_ratio=None", "margin=0.5"],
    )
    assert parsed == {
        "metric": "projected",
        "steps": 2,
        "proportional_attention": True,
        "layer_ratio": None,
        "margin": 0.5,
    }
    assert type(parsed["steps"]) is int and type(parsed["margin"]) is float
    assert parse_options("tokencorr", ["global_inside=off", "combine=union", "scale=none"]) == {
        "global_inside": False,
        "combine": "union",
        "scale": None,
    }
    assert parse_options("pitome", ["merge=none"]) == {"merge": "none"}  # a str field keeps "none"
    assert make_config("pitome", **{**parsed, "placement": "tower"}).steps == 2


def test_parse_options_splits_pairs_only_before_a_key():
    from vtcompress.registry import parse_options

    assert parse_options("globalcom2", ["alpha=0.7, temperature=5", "allocation=paper"]) == {
        "alpha": 0.7,
        "temperature": 5.0,
        "allocation": "paper",
    }
    assert parse_options("globalcom2", ["alpha=0.7\ntemperature=5"]) == {"alpha": 0.7, "temperature": 5.0}
    with pytest.raises(ValueError, match="alpha is a number; got '0,7'"):  # a decimal comma stays one value
        parse_options("globalcom2", ["alpha=0,7"])
    with pytest.raises(ValueError, match="ratio is not a method option here: use --ratio"):
        parse_options("globalcom2", ["ratio=abc"], reserved={"ratio": "use --ratio"})
    with pytest.raises(
        ValueError, match="its options are: allocation, alpha, newline, region_aggregation, score"
    ):
        parse_options("globalcom2", ["budget=1"], reserved={"ratio": "use --ratio"})  # ratio not offered


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["steps"], "not KEY=VALUE"),
        (["=2"], "not KEY=VALUE"),
        (["budget=2"], "pitome has no option 'budget'; its options are: bipartite_until"),
        (["steps=2.5"], "pitome option steps is a whole number; got '2.5'"),
        (["steps=none"], "pitome option steps is a whole number; got 'none'"),
        (["layer_ratio=half"], "layer_ratio is a number or none"),
        (["proportional_attention=maybe"], "proportional_attention is true or false"),
        (["steps=1", "steps=2"], "'steps' given twice"),
    ],
)
def test_parse_options_errors_name_the_fix(items, message):
    from vtcompress.registry import parse_options

    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_options("pitome", items)


def test_changed_options_lists_what_differs_from_the_defaults():
    assert GlobalCom2Config(ratio=0.1).changed_options() == ""
    assert (
        GlobalCom2Config(allocation="paper", alpha=0.7).changed_options() == "allocation='paper', alpha=0.7"
    )
