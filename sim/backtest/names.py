"""The series a recorded HPA is read from: kube-state-metrics' and cAdvisor's own names.

Sources: kube-state-metrics docs/metrics (horizontalpodautoscaler-metrics.md, pod-metrics.md,
replicaset-metrics.md) and cAdvisor's ``container_cpu_usage_seconds_total``; TF Serving's
request counter is ``:tensorflow:serving:request_count`` (its Prometheus exporter,
tensorflow_serving/model_servers/http_rest_api_handler + monitoring config).
"""

HPA_INFO = "kube_horizontalpodautoscaler_info"
HPA_MIN = "kube_horizontalpodautoscaler_spec_min_replicas"
HPA_MAX = "kube_horizontalpodautoscaler_spec_max_replicas"
HPA_TARGET = "kube_horizontalpodautoscaler_spec_target_metric"
HPA_DESIRED = "kube_horizontalpodautoscaler_status_desired_replicas"
HPA_CURRENT = "kube_horizontalpodautoscaler_status_current_replicas"
POD_CREATED = "kube_pod_created"
POD_START = "kube_pod_start_time"
POD_READY = "kube_pod_status_ready"
POD_READY_TIME = "kube_pod_status_ready_time"
POD_PHASE = "kube_pod_status_phase"
POD_DELETION = "kube_pod_deletion_timestamp"
POD_REQUESTS = "kube_pod_container_resource_requests"
POD_OWNER = "kube_pod_owner"
REPLICASET_OWNER = "kube_replicaset_owner"
DEPLOYMENT_REPLICAS = "kube_deployment_spec_replicas"
DEPLOYMENT_READY = "kube_deployment_status_replicas_ready"
CPU = "container_cpu_usage_seconds_total"
REQUESTS = ":tensorflow:serving:request_count"

#: What a backtest cannot do without, and what each is for (named in the error when absent).
REQUIRED = {
    HPA_CURRENT: "the replicas the HPA started each sync from",
    HPA_DESIRED: "the HPA's recorded decisions",
    POD_CREATED: "which pods existed",
    POD_OWNER: "which pods belong to the HPA's target",
    POD_REQUESTS: "each pod's CPU request",
    CPU: "each pod's CPU usage",
}
