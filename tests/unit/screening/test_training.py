"""Training side: family-holding folds, the novelty score, and the corpus readers' filters."""

from __future__ import annotations

import random

import numpy as np
import pytest

from screening import features
from screening.corpus import benign, debian
from screening.detectors import ScreeningModel, ngram_columns


def test_grouped_folds_hold_each_attack_family_out_whole() -> None:
    y = np.array([0] * 60 + [1] * 60)
    groups = np.array(["prose"] * 60 + ["sqli"] * 20 + ["xss"] * 20 + ["cmdi"] * 20)
    folds = ScreeningModel(folds=3)._folds(y, groups)
    held_families = []
    for fit_index, held_index in folds:
        assert not set(fit_index) & set(held_index)
        held = {g for g in groups[held_index][y[held_index] == 1]}
        assert not held & {g for g in groups[fit_index][y[fit_index] == 1]}  # never on both sides
        held_families.append(held)
    assert set().union(*held_families) == {"sqli", "xss", "cmdi"}
    assert sorted(np.concatenate([h for _, h in folds]).tolist()) == list(range(len(y)))


def _synthetic(rng: np.random.Generator, n: int, label: int) -> np.ndarray:
    X = np.zeros((n, features.N_FEATURES), dtype=np.float32)
    columns = ngram_columns()
    common = columns[:20] if label == 0 else columns[-40:]
    for row in X:
        row[rng.choice(common, 5, replace=False)] = 1.0
        row[features._MAX0:] = rng.random(features.N_FEATURES - features._MAX0)
    return X


def test_novelty_counts_ngrams_benign_traffic_never_has() -> None:
    rng = np.random.default_rng(0)
    X = np.vstack([_synthetic(rng, 300, 0), _synthetic(rng, 150, 1)])
    y = np.array([0] * 300 + [1] * 150)
    model = ScreeningModel(n_trees=10, folds=2).fit(X, y, groups=np.array(["b"] * 300 + ["a1", "a2"] * 75))
    novelty = model.novelty(X)
    assert np.all(novelty[:300] == 0) and np.all(novelty[300:] >= np.log1p(5) - 1e-6)
    assert model.rare_[: features._BI0].sum() == 0 and model.rare_[features._MAX0 :].sum() == 0
    scores = model.score(X)
    assert scores[300:].min() > scores[:300].max()


def test_wfuzz_entries_skip_what_is_no_attack_on_its_own() -> None:
    kept = debian._entries("'\n--\ninsert\n%00\n' or 1=1--\n' or 1=1--\n\n<script>alert(1)</script>\n")
    assert kept == ["' or 1=1--", "<script>alert(1)</script>"]
    assert debian._xml_family('<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>') == "xxe"
    assert debian._xml_family("count(/child::node())") == "ldap"
    assert debian._xml_family("<![CDATA[<script>alert(1)</script>]]>") == "xss"


def test_benign_phrases_are_deterministic_innocent_and_tricky() -> None:
    pytest.importorskip("faker")
    first = [s.text for s in benign.phrases(random.Random(5), 400)]
    assert first == [s.text for s in benign.phrases(random.Random(5), 400)]
    assert all(s.label == 0 and s.source == "portcullis-benign" for s in benign.phrases(random.Random(5), 50))
    assert any("&" in t for t in first) and any("'" in t for t in first)
    assert any(word in t.lower() for t in first for word in ("select", "drop", "union", "script"))
