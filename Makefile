# The README's two commands:  `make demo` (the main job) and `make test` (the test suite).
# Each creates .venv in the checkout if missing and installs what it needs (CPU torch via constraints-cpu.txt).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   := data/ml-100k
RUN    := runs/quickstart
STAMP  := $(VENV)/.installed

.PHONY: install demo evaluate-full test test-fast assets clean

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints-cpu.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

assets: install
	$(BIN)/user-embed assets

demo: assets
	$(BIN)/user-embed prepare movielens-100k --out $(DATA)
	$(BIN)/user-embed fit --config configs/quickstart.yaml
	$(BIN)/user-embed evaluate --checkpoint $(RUN)/embedder --data $(DATA) --out $(RUN)/eval --text-max-users 30 \
	  --free-text-methods none,soft --no-progress
	$(BIN)/user-embed generate --checkpoint $(RUN)/embedder --data $(DATA) --user "$$($(BIN)/python -c \
	  "import polars as pl; print(pl.read_parquet('$(DATA)/qa.parquet').filter(pl.col('split') == 'test')['user_id'][0])")" \
	  --question "Which genres does this user like most? Answer in one sentence." --max-new-tokens 40
	@echo "report: $(RUN)/eval/report.md"

# The demo evaluates `none` and `soft` on the whole test split and the slow `text` baseline on 30 seeded test
# users; `evaluate-full` runs `text` on the whole split too (≈ 15 min on 2 cores, most of it the text baseline).
evaluate-full: assets
	$(BIN)/user-embed evaluate --checkpoint $(RUN)/embedder --data $(DATA) --out $(RUN)/eval_full --no-progress

test: assets
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf runs lightning_logs .pytest_cache
