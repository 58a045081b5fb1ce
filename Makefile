# The two commands: `make demo` and `make test`. Everything else is a step of theirs.
.PHONY: setup demo test bench bench-metrics bench-latency bench-similarity bench-anonymize bench-tokens lint kafka-start kafka-stop clean

setup:
	scripts/setup.sh

demo:
	scripts/demo.sh

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)

bench: setup
	.venv/bin/python -m bench.throughput $(BENCH_ARGS)

bench-metrics: setup
	.venv/bin/python -m bench.metrics $(BENCH_ARGS)

bench-latency: setup
	.venv/bin/python -m bench.latency $(BENCH_ARGS)

bench-similarity: setup
	.venv/bin/python -m bench.similarity $(BENCH_ARGS)

bench-anonymize: setup
	.venv/bin/python -m bench.anonymize $(BENCH_ARGS)

bench-tokens: setup
	.venv/bin/python -m bench.tokens $(BENCH_ARGS)

lint: setup
	.venv/bin/ruff check jobs udfs txwatch tests bench
	.venv/bin/ruff format --check jobs udfs txwatch tests bench
	.venv/bin/mypy

kafka-start: setup
	scripts/kafka-local.sh start

kafka-stop:
	scripts/kafka-local.sh stop

clean:
	scripts/kafka-local.sh stop
	rm -rf lake .kafka-local .deps/build spark-warehouse
