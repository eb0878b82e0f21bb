# The two commands the README opens with: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: run test test-clock lint bench reliability clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The demo needs only the service itself: not the test and lint toolchain.
$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/planfix-notifier demo

lint: $(STAMP)
	$(BIN)/ruff check notifier tests bench
	$(BIN)/ruff format --check notifier tests bench
	$(BIN)/mypy

# Two workers (pytest-xdist): the tests mostly wait on real servers, so two
# run side by side at little cost to each.
test: lint
	$(BIN)/pytest -m "not slow" -n 2

# The tests that read a clock, run three times side by side with the wall
# clock of every process moved (time-machine): +400 days, just before midnight
# in Moscow, and under TZ=America/New_York just before its daylight-saving change.
test-clock: $(STAMP)
	$(BIN)/python -m tests.shifted_clock

# The security (and pacing) checks that live beside the code they guard, run
# again here so the table shows them.
BESIDE := \
	tests/channels/test_telegram.py::test_a_message_held_up_on_the_way_does_not_crowd_the_next \
	tests/test_operations.py::test_a_session_of_the_service_leaks_no_secret \
	tests/planfix/test_client.py::test_wrong_password_is_fatal_and_names_no_secret \
	tests/bot/test_bot.py::test_a_stranger_is_refused_politely \
	tests/planfix/test_client.py::test_plain_http_to_a_remote_host_is_refused \
	tests/channels/test_webhook.py::test_plain_http_to_a_remote_host_is_refused \
	tests/channels/test_telegram.py::test_plain_http_to_a_remote_host_is_refused \
	tests/channels/test_email.py::test_a_password_never_goes_in_clear_to_a_remote_host \
	tests/store/test_store.py::test_new_file_is_private_and_current

# All of tests/reliability, the slow crash runs and the soak too; then the README's table.
reliability: $(STAMP)
	mkdir -p bench/results
	$(BIN)/pytest tests/reliability $(BESIDE) -p no:logging --junitxml=bench/results/reliability.xml
	$(BIN)/python -m tests.reliability.report bench/results/reliability.xml README.md

bench: $(STAMP)
	$(BIN)/python -m bench.client_overhead
	$(BIN)/python -m bench.detection_latency
	$(BIN)/python -m bench.dispatch
	$(BIN)/python -m bench.footprint
	$(BIN)/python -m bench.feed_scale
	$(BIN)/python -m bench.push
	$(BIN)/python -m bench.instances

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache bench/results
