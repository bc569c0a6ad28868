"""EXAMPLE, not a DAG: how a Kubernetes deployment runs the nightly DAG's `train` task on a GPU node.

Nothing here runs on the 2-core dev machine: it needs apache-airflow-providers-cncf-kubernetes (not a project
dependency) and a Kubernetes cluster with GPU nodes. The module lives outside dags/, defines no DAG, and imports the
provider only when `gpu_train_model()` is called, so importing it (or collecting tests) never needs the provider;
tests/test_infra_production.py only parses it with `ast`.

A deployment swaps the task in its copy of dags/attnrec_nightly.py (with this module and kubernetes/ beside it):

    from airflow_gpu_train_example import gpu_train_model

    with DAG(...) as dag:
        ...
        train = gpu_train_model()  # instead of python_step("train", ...)
        ingest_events >> build_sequences >> train >> evaluate_and_gate >> ...

The pod comes from kubernetes/train_gpu_pod.yaml (image, command, one nvidia.com/gpu, GPU node selector and
toleration, the shared /data claim). Its contents go in as `pod_template_dict`, a templated field, so Airflow renders
the `{{ data_interval_start | ds }}` in the command for each run; `pod_template_file` is a plain path whose contents
Airflow would not render.
"""

from __future__ import annotations

from pathlib import Path

POD_TEMPLATE = Path(__file__).resolve().parent / "kubernetes" / "train_gpu_pod.yaml"


def gpu_train_model(task_id: str = "train", *, pod_template: Path = POD_TEMPLATE):
    """The train task as a KubernetesPodOperator running `pod_template` (image and command come from the template)."""
    try:
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    except ImportError as exc:  # only a deployment that calls this needs the provider
        raise ImportError("gpu_train_model needs apache-airflow-providers-cncf-kubernetes") from exc
    import yaml

    return KubernetesPodOperator(
        task_id=task_id,
        pod_template_dict=yaml.safe_load(pod_template.read_text()),
        in_cluster=True,  # the Airflow worker runs in the cluster, as airflow-worker (kubernetes/spark-rbac.yaml)
        get_logs=True,
        log_events_on_failure=True,
        reattach_on_restart=True,  # a restarted worker follows the running pod instead of starting a second one
        on_finish_action="delete_succeeded_pod",  # a failed pod stays for inspection
        startup_timeout_seconds=1200,  # the GPU pool may have to scale up and pull the image first
    )
