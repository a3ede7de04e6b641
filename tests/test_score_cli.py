"""`user-embed score lamp|uqabench`: one JSON object on stdout, one-line errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from user_embed.cli import main


def write_json(path: Path, obj) -> str:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return str(path)


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_score_lamp_classification_and_generation(tmp_path, capsys):
    golds = write_json(
        tmp_path / "golds.json",
        {"task": "LaMP_1", "golds": [{"id": "1", "output": "[1]"}, {"id": "2", "output": "[2]"}]},
    )
    preds = write_json(
        tmp_path / "preds.json",
        {"task": "LaMP_1", "golds": [{"id": "2", "output": "[2]"}, {"id": "1", "output": "[2]"}]},
    )
    code, out, err = run(capsys, ["score", "lamp", "--task", "LaMP_1", "--golds", golds, "--preds", preds])
    assert code == 0 and err == ""
    # golds [0, 1], preds [1, 1]: accuracy 1/2; F1 label0 = 0, label1 = 2/3 -> macro 1/3
    assert json.loads(out) == {"accuracy": 0.5, "f1": pytest.approx(1 / 3)}
    g7 = write_json(
        tmp_path / "g7.json", {"task": "LaMP_7", "golds": [{"id": "a", "output": "the cat sat on the mat"}]}
    )
    p7 = write_json(tmp_path / "p7.json", {"task": "LaMP_7", "golds": [{"id": "a", "output": "mat the on"}]})
    code, out, _ = run(capsys, ["score", "lamp", "--task", "LaMP_7", "--golds", g7, "--preds", p7])
    assert code == 0 and json.loads(out) == {"rouge-1": pytest.approx(2 / 3), "rouge-L": pytest.approx(4 / 9)}


def test_score_lamp_errors_exit_2_with_one_line(tmp_path, capsys):
    golds = write_json(
        tmp_path / "golds.json", {"task": "LaMP_3", "golds": [{"id": "1", "output": "5"}, {"id": "2", "output": "4"}]}
    )
    preds = write_json(tmp_path / "preds.json", {"task": "LaMP_3", "golds": [{"id": "1", "output": "5"}]})
    code, out, err = run(capsys, ["score", "lamp", "--task", "LaMP_3", "--golds", golds, "--preds", preds])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "preds.json: no prediction for 1 id(s), e.g. ['2']" in err
    code, _, err = run(capsys, ["score", "lamp", "--task", "LaMP_12", "--golds", golds, "--preds", preds])
    assert code == 2 and "unknown LaMP task 'LaMP_12'" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    code, _, err = run(capsys, ["score", "lamp", "--task", "LaMP_3", "--golds", str(bad), "--preds", preds])
    assert code == 2 and "bad.json: malformed JSON" in err
    code, _, err = run(
        capsys, ["score", "lamp", "--task", "LaMP_3", "--golds", str(tmp_path / "nope.json"), "--preds", preds]
    )
    assert code == 2 and "nope.json: golds file not found" in err
    with pytest.raises(SystemExit) as exc:  # argparse: missing --preds
        main(["score", "lamp", "--task", "LaMP_3", "--golds", golds])
    assert exc.value.code == 2


def test_score_uqabench(tmp_path, capsys):
    lines = [
        {"question": "用户近期最感兴趣的品牌是什么？", "answer": "耐克", "prediction": "耐克"},
        {"question": "用户下一个可能点击的商品的品牌是什么？", "answer": ["优衣库"], "prediction": "阿迪达斯"},
    ]
    generated = tmp_path / "generated.jsonl"
    generated.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in lines), encoding="utf-8")
    code, out, err = run(capsys, ["score", "uqabench", "--golds", str(generated)])
    assert code == 0 and err == ""
    metrics = json.loads(out)
    assert metrics["accuracy"] == 0.5 and metrics["n"] == 2
    assert metrics["tasks"] == {"ap": {"accuracy": 0.0, "n": 1}, "si": {"accuracy": 1.0, "n": 1}}
    assert metrics["families"] == {
        "action_prediction": {"accuracy": 0.0, "n": 1},
        "interest_perception": {"accuracy": 1.0, "n": 1},
    }
    preds = tmp_path / "preds.jsonl"
    preds.write_text('{"prediction": "耐克"}\n', encoding="utf-8")
    code, _, err = run(capsys, ["score", "uqabench", "--golds", str(generated), "--preds", str(preds)])
    assert code == 2 and "1 predictions for 2 golds" in err
