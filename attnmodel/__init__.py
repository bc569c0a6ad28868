"""attnmodel: the attention-based sequence model of attnrec (pure PyTorch + pyarrow; never Spark or Airflow)."""
