"""Runnable txwatch jobs; each module has a ``main()`` started through ``spark-submit.sh``."""
