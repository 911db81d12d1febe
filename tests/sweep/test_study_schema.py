"""Study schema: valid studies expand as documented; malformed ones fail with a precise error."""

from __future__ import annotations

import copy

import pytest
import yaml

from raysweep.errors import StudyError
from raysweep.results import run_id
from raysweep.sweep.study import load_study, parse_study
from raysweep.sweep.trials import expand

BASE = {
    "version": 1, "name": "t", "backend": "simulated", "sizes": ["2x32", "d48"],
    "tokens_per_param": [10, 20], "seeds": [0],
    "representations": [{"name": "dense", "weights": "bf16", "activations": "bf16"},
                        {"name": "w4a4", "weights": "int4", "activations": "int4"}],
}


def study(**over):
    raw = copy.deepcopy(BASE)
    for k, v in over.items():
        if v is None:
            raw.pop(k, None)
        else:
            raw[k] = v
    return raw


def test_expand_counts_labels_and_tokens():
    s = parse_study(study())
    trials = expand(s)
    assert len(trials) == 2 * 2 * 2
    t = trials[0]
    assert t["format"] == "dense" and t["n_params"] == 23_712 and t["n_layers"] == 2
    assert t["tokens"] == round(10 * 23_712) and t["tokens_per_param"] == 10
    assert len({x["run_id"] for x in trials}) == len(trials)


def test_product_grid_and_overrides():
    reps = [
        {"product": {"weights": ["int4", "int2"], "activations": ["bf16", "int4"]}},
        {"grid": {"name": "s{s}w{b}", "weights": "sparse{s}+int{b}", "s": [50, 70],
                  "b": [4, 8]}, "tokens": [1000], "seeds": [3, 4], "sizes": ["2x32"]},
    ]
    s = parse_study(study(representations=reps))
    names = [r.name for r in s.representations]
    assert names[:4] == ["int4|bf16", "int4|int4", "int2|bf16", "int2|int4"]
    assert names[4:] == ["s50w4", "s50w8", "s70w4", "s70w8"]
    trials = expand(s)
    grid = [t for t in trials if t["format"].startswith("s")]
    assert len(grid) == 4 * 1 * 1 * 2 and {t["tokens"] for t in grid} == {1000}
    assert {t["seed"] for t in grid} == {3, 4}
    assert grid[0]["weights"] == "sparse50+int4" and grid[0]["activations"] == "bf16"


def test_run_id_is_stable_and_ignores_location():
    a = expand(parse_study(study()))[0]
    b = dict(a, checkpoint_dir="/elsewhere", threads=4, study="other")
    assert run_id(a) == run_id(b) == a["run_id"]
    c = dict(a, seed=99)
    assert run_id(c) != a["run_id"]
    # a training hyperparameter changes the experiment, hence the id
    d = expand(parse_study(study(training={"lr": 1e-3})))[0]
    assert d["run_id"] != a["run_id"] and d["training"] == {"lr": 1e-3}


def test_tokens_given_directly_and_gpu_auto(tmp_path):
    s = parse_study(study(tokens_per_param=None, tokens=[5000, 1e4],
                          resources={"cpu": 2, "gpu": "auto"}))
    assert {t["tokens"] for t in expand(s)} == {5000, 10000}
    assert s.resources.gpu == "auto" and s.resources.cpu == 2.0


def test_resolved_study_round_trips(tmp_path):
    s = parse_study(study(representations=[{"product": {"weights": ["int4", "bf16"]}}]))
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(s.to_dict()))
    s2 = load_study(p)
    assert [t["run_id"] for t in expand(s2)] == [t["run_id"] for t in expand(s)]


MALFORMED = [
    # (id, overrides, substring expected in the message)
    ("no_version", {"version": None}, "version"),
    ("bad_version", {"version": 2}, "version"),
    ("no_name", {"name": None}, "name"),
    ("bad_name", {"name": "a b/c"}, "name"),
    ("unknown_top", {"sizez": ["2x32"]}, "did you mean 'sizes'"),
    ("bad_backend", {"backend": "gpu"}, "train, simulated, replay"),
    ("no_sizes", {"sizes": None}, "sizes"),
    ("sizes_scalar", {"sizes": "2x32"}, "sizes"),
    ("bad_size", {"sizes": ["2x32", "huge"]}, "sizes[1]"),
    ("no_tokens", {"tokens_per_param": None}, "tokens_per_param"),
    ("both_tokens", {"tokens": [1000]}, "not both"),
    ("neg_ratio", {"tokens_per_param": [10, -1]}, "tokens_per_param[1]"),
    ("str_ratio", {"tokens_per_param": ["many"]}, "tokens_per_param[0]"),
    ("float_tokens", {"tokens_per_param": None, "tokens": [10.5]}, "tokens[0]"),
    ("neg_seed", {"seeds": [-1]}, "seeds[0]"),
    ("bool_seed", {"seeds": [True]}, "seeds[0]"),
    ("no_reps", {"representations": []}, "representations"),
    ("rep_not_map", {"representations": ["int4"]}, "representations[0]"),
    ("bad_spec", {"representations": [{"name": "x", "weights": "int99"}]},
     "representations[0].weights"),
    ("rep_unknown_key", {"representations": [{"name": "x", "wieghts": "int4"}]},
     "did you mean 'weights'"),
    ("dup_name", {"representations": [{"name": "x"}, {"name": "x", "weights": "int4"}]},
     "duplicate representation"),
    ("product_bad", {"representations": [{"product": {"weights": "int4"}}]},
     "representations[0].product.weights"),
    ("grid_unused_axis", {"representations": [{"grid": {"weights": "int{b}", "b": [4],
                                                        "c": [1]}}]}, "axis used by no"),
    ("grid_unknown_placeholder", {"representations": [{"grid": {"weights": "int{q}",
                                                                "b": [4]}}]}, "{q}"),
    ("grid_bad_spec", {"representations": [{"grid": {"weights": "int{b}", "b": [4, 12]}}]},
     "int12"),
    ("training_unknown", {"training": {"learning_rate": 1e-3}}, "training.learning_rate"),
    ("training_bad_value", {"training": {"batch_size": 0}}, "training.batch_size"),
    ("training_bad_estimator", {"training": {"estimator": "magic"}}, "training.estimator"),
    ("resources_gpu_str", {"resources": {"gpu": "lots"}}, "resources.gpu"),
    ("resources_gpu_frac", {"resources": {"gpu": 1.5}}, "resources.gpu"),
    ("resources_unknown", {"resources": {"memory": 4}}, "resources.memory"),
    ("search_strategy", {"search": {"strategy": "bayes"}}, "grid, active"),
    ("search_grid_option", {"search": {"strategy": "grid", "budget_flops": 1e18}},
     "search.budget_flops"),
    ("simulated_bad_noise", {"simulated": {"noise": -0.1}}, "simulated.noise"),
    ("simulated_bad_law", {"simulated": {"law": {"gamma": 1}}}, "simulated.law.gamma"),
    ("replay_without_backend", {"replay": {"table": "x.csv"}}, "only with backend: replay"),
    ("replay_missing_table", {"backend": "replay", "replay": {"table": "/nope/x.csv"}},
     "replay.table"),
    ("replay_table_with_sizes", {"backend": "replay", "representations": None,
                                 "replay": {"table": "/nope/x.csv"}}, "from the table"),
    ("retries_neg", {"retries": -1}, "retries"),
    ("dup_trials", {"sizes": ["2x32", "d32"]}, "twice"),
]


@pytest.mark.parametrize("case,over,needle", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_study_names_key_and_allowed(tmp_path, case, over, needle):
    p = tmp_path / f"{case}.yaml"
    p.write_text(yaml.safe_dump(study(**over)))
    with pytest.raises(StudyError) as ei:
        load_study(p)
    msg = str(ei.value)
    assert str(p) in msg, msg
    assert needle in msg, msg
    assert "got " in msg


@pytest.mark.parametrize("text,needle", [
    ("version: 1\nname: t\nname: u\n", "duplicate key"),
    ("version: 1\nname: [unclosed\n", "not valid YAML"),
    ("!!python/object/apply:os.system ['echo hi']\n", "not valid YAML"),
    ("- just\n- a list\n", "a mapping"),
])
def test_malformed_yaml_text(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(StudyError, match=needle):
        load_study(p)


def test_missing_file_is_a_study_error(tmp_path):
    with pytest.raises(StudyError, match="no such study file"):
        load_study(tmp_path / "nope.yaml")
