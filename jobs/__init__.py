"""attnrec Spark jobs. Modules here import pyspark lazily where a CLI path does not need it."""
