# Two entry points: `make demo` (set up, generate a shop, train, serve) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
HOME_DIR ?= .shopmind
DEMO_USERS ?= 5000
TRAIN_BUDGET ?= 180

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test,text]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: export SHOPMIND_HOME := $(HOME_DIR)
demo: $(STAMP)
	$(BIN)/shopmind init
	test -f $(HOME_DIR)/demo-data/events.parquet || $(BIN)/shopmind generate --out $(HOME_DIR)/demo-data --users $(DEMO_USERS)
	$(BIN)/shopmind import $(HOME_DIR)/demo-data
	$(BIN)/shopmind train --budget $(TRAIN_BUDGET)
	$(BIN)/shopmind risk replay --behaviour-as-of auto
	$(BIN)/shopmind risk train
	@# the dashboard's link carries a key that can read, not the admin key (terminal and CI logs keep it)
	@test -s $(HOME_DIR)/dashboard.key || (umask 077 && $(BIN)/shopmind keys create --name dashboard \
	    --scopes analyst,recommend > $(HOME_DIR)/dashboard.key.tmp && mv $(HOME_DIR)/dashboard.key.tmp $(HOME_DIR)/dashboard.key)
	@echo "dashboard: http://127.0.0.1:$${SHOPMIND_PORT:-8000}/dashboard#key=$$(cat $(HOME_DIR)/dashboard.key)&user=u0000001"
	@echo "API docs:  http://127.0.0.1:$${SHOPMIND_PORT:-8000}/docs   (admin key in $(HOME_DIR)/admin.key)"
	$(BIN)/shopmind serve

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/ingest_throughput.py

clean:
	rm -rf $(VENV) $(HOME_DIR) .pytest_cache
