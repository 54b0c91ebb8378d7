# hipages_pipeline - the commands a data engineer needs. `make help` lists them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/dagster_home

# Settings: one name each. A make variable is the environment variable without HIPAGES_ and the
# command-line option without dashes: SOURCE (--source, HIPAGES_SOURCE), OUTPUT_DIR (--output-dir,
# HIPAGES_OUTPUT_DIR), TIMEZONE (--timezone, HIPAGES_SOURCE_TIMEZONE); HOUR is `make job`'s hour.
# Any other variable given on the command line stops make with one line (a misspelt setting would
# otherwise be ignored silently).
SETTINGS := SOURCE OUTPUT_DIR TIMEZONE HOUR ARGS PYTHON
UNKNOWN := $(filter-out $(SETTINGS),$(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(v))))
ifneq ($(UNKNOWN),)
$(error unknown variable $(UNKNOWN): the settings are $(SETTINGS) (e.g. make run SOURCE='data/*.json' OUTPUT_DIR=/tmp/out TIMEZONE=UTC, make job HOUR=2017-02-02-20:00))
endif
ifdef SOURCE
export HIPAGES_SOURCE := $(SOURCE)
endif
ifdef OUTPUT_DIR
export HIPAGES_OUTPUT_DIR := $(OUTPUT_DIR)
endif
ifdef TIMEZONE
export HIPAGES_SOURCE_TIMEZONE := $(TIMEZONE)
endif
HOUR ?= 2017-02-02-20:00
ifneq ($(origin HOUR),file)
ifneq ($(shell $(PYTHON) -c 'import datetime as d, re, sys; h = sys.argv[1]; t = re.fullmatch(r"\d{4}-\d\d-\d\d-\d\d:00", h) and d.datetime.strptime(h, "%Y-%m-%d-%H:%M"); now = d.datetime.now(d.timezone.utc).replace(tzinfo=None); print("ok" if t and d.datetime(2017, 1, 1) <= t <= now - d.timedelta(hours=1) else "no")' '$(HOUR)' 2>/dev/null),ok)
$(error HOUR=$(HOUR): expected the form YYYY-MM-DD-HH:00, a UTC hour that has ended, from 2017-01-01-00:00 on (a partition), such as 2017-02-02-20:00)
endif
endif

.PHONY: help install run test lint contract-doc dev job lock clean bench

help:  ## list the commands
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(INSTALLED): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(INSTALLED)

install: $(INSTALLED)  ## create .venv and install the pinned dependencies

run: $(INSTALLED)  ## run the pipeline on data/ (SOURCE=glob OUTPUT_DIR=dir TIMEZONE=tz to override)
	$(BIN)/hipages-pipeline run $(if $(SOURCE),--source '$(SOURCE)') $(if $(OUTPUT_DIR),--output-dir '$(OUTPUT_DIR)') $(if $(TIMEZONE),--timezone '$(TIMEZONE)')

test: $(INSTALLED)  ## run the test suite
	$(BIN)/python -m pytest

lint: $(INSTALLED)  ## ruff over the package, tests and benchmarks
	$(BIN)/ruff check hipages_pipeline hipages_pipeline_tests benchmarks

contract-doc: $(INSTALLED)  ## regenerate docs/data_contract.md from hipages_pipeline/lib/contract.py
	$(BIN)/python -m hipages_pipeline.lib.contract_doc > docs/data_contract.md

dev: $(INSTALLED)  ## start the Dagster UI (http://127.0.0.1:3000) with the project's instance (HIPAGES_AUTOMATION=on: schedule + sensor on)
	$(BIN)/dagster dev -w workspace.yaml

job: $(INSTALLED)  ## land new or changed files, then run hipages_etl_job for one hour with `dagster job execute` (HOUR=2017-02-02-20:00; SOURCE, OUTPUT_DIR, TIMEZONE)
	$(if $(OUTPUT_DIR)$(SOURCE)$(TIMEZONE),@echo "settings: $(if $(SOURCE),HIPAGES_SOURCE='$(SOURCE)' )$(if $(OUTPUT_DIR),HIPAGES_OUTPUT_DIR='$(OUTPUT_DIR)' )$(if $(TIMEZONE),HIPAGES_SOURCE_TIMEZONE='$(TIMEZONE)')")
	$(BIN)/hipages-pipeline land
	$(BIN)/dagster job execute -m hipages_pipeline.definitions -j hipages_etl_job \
	  --tags '{"dagster/asset_partition_range_start": "$(HOUR)", "dagster/asset_partition_range_end": "$(HOUR)"}'

lock: $(INSTALLED)  ## rewrite constraints.txt from the installed versions
	( echo '# Exact versions tested (pip install -c constraints.txt -e ".[dev]"). Regenerate with `make lock`.'; \
	  $(BIN)/python -m pip freeze --exclude-editable ) > constraints.txt

clean:  ## remove outputs and the local Dagster history (keeps .venv)
	rm -rf data/output .pytest_cache .hypothesis
	find dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +

bench: $(INSTALLED)  ## pipeline vs DuckDB SQL at 10M (1 file, 24 hourly files), 300k as 1 vs 2,000 files, typical solution at 1M -> benchmarks/RESULTS.md (~20 min; ARGS=... to override, see python -m benchmarks --help)
	$(BIN)/python -m benchmarks $(ARGS)
