"""The autoscaling/v2 HorizontalPodAutoscaler ``spec``, spelled exactly as the Kubernetes API.

Paste the ``spec:`` of an HPA manifest under a scenario's ``hpa:`` key and it validates here.
Field names are camelCase as in the API; unknown fields are errors (with a "did you mean"
hint). Validation follows the API server's (pkg/apis/autoscaling/validation) plus one stricter
rule: ``target.type`` must name the target field that is set. Defaults are the API server's
(pkg/apis/autoscaling/v2/defaults.go): ``minReplicas`` 1; no metrics -> cpu Utilization 80%;
a non-nil ``behavior`` gets GenerateHPAScaleUpRules / GenerateHPAScaleDownRules, where each
non-nil user field replaces the default and a user ``policies`` list replaces the whole list.
``scaleDown.stabilizationWindowSeconds`` stays None; the controller fills it from its flag.

:meth:`HorizontalPodAutoscalerSpec.to_core` converts to the frozen :class:`sim.hpa.types.HPASpec`
(quantities as integer milli-units) that the decision core runs on.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from sim.hpa.types import (
    DEFAULT_SCALE_DOWN_RULES,
    DEFAULT_SCALE_UP_RULES,
    Behavior,
    HPASpec,
    MetricSourceType,
    MetricTargetType,
    PolicyType,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
)
from sim.hpa.types import (
    MetricSpec as CoreMetricSpec,
)
from sim.hpa.types import (
    MetricTarget as CoreMetricTarget,
)
from sim.units import milli, parse_quantity

__all__ = [
    "DEFAULT_CPU_UTILIZATION",
    "ContainerResourceMetricSource",
    "CrossVersionObjectReference",
    "ExternalMetricSource",
    "HPAScalingPolicy",
    "HPAScalingRules",
    "HorizontalPodAutoscalerBehavior",
    "HorizontalPodAutoscalerSpec",
    "LabelSelector",
    "MetricIdentifier",
    "MetricSpec",
    "MetricTarget",
    "ObjectMetricSource",
    "PodsMetricSource",
    "ResourceMetricSource",
]

#: autoscaling.DefaultCPUUtilization, used when ``spec.metrics`` is empty.
DEFAULT_CPU_UTILIZATION = 80


def _check_quantity(value: Any) -> Any:
    """Accept what ``resource.Quantity`` accepts ("500m", "4Gi", 2, 0.5); keep it as given."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError(f"expected a quantity such as 500m, 3 or 4Gi, got {value!r}")
    parse_quantity(value)  # raises ValueError with the allowed forms
    return value


#: A Kubernetes quantity, kept as written; converted with sim.units when the core needs it.
Quantity = Annotated[str | int | float, BeforeValidator(_check_quantity)]


class _K8sModel(BaseModel):
    """Base: forbid unknown fields and say which known field was probably meant."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = list(cls.model_fields)
            unknown = [key for key in data if key not in cls.model_fields]
            if unknown:
                parts = []
                for key in unknown:
                    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                    parts.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
                raise ValueError(
                    f"unknown field {', '.join(parts)} in {cls.__name__}; "
                    f"allowed fields: {', '.join(allowed)}"
                )
        return data


class CrossVersionObjectReference(_K8sModel):
    """``scaleTargetRef`` / ``describedObject``: which object is meant."""

    kind: str
    name: str
    apiVersion: str | None = None


class LabelSelectorRequirement(_K8sModel):
    """One ``matchExpressions`` entry (carried, not evaluated by the simulator)."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None


class LabelSelector(_K8sModel):
    """metav1.LabelSelector (carried, not evaluated by the simulator)."""

    matchLabels: dict[str, str] | None = None
    matchExpressions: list[LabelSelectorRequirement] | None = None


class MetricIdentifier(_K8sModel):
    """``metric: {name, selector}`` of Pods/Object/External sources."""

    name: str = Field(min_length=1)
    selector: LabelSelector | None = None


_TARGET_FIELD = {
    "Utilization": "averageUtilization",
    "AverageValue": "averageValue",
    "Value": "value",
}


class MetricTarget(_K8sModel):
    """autoscaling/v2 MetricTarget: ``type`` plus exactly the matching value field."""

    type: Literal["Utilization", "Value", "AverageValue"]
    averageUtilization: int | None = Field(default=None, ge=1)
    averageValue: Quantity | None = None
    value: Quantity | None = None

    @model_validator(mode="after")
    def _matching_field(self) -> MetricTarget:
        wanted = _TARGET_FIELD[self.type]
        given = [name for name in _TARGET_FIELD.values() if getattr(self, name) is not None]
        if given != [wanted]:
            shown = ", ".join(given) if given else "none"
            raise ValueError(
                f"target type {self.type} needs exactly the field {wanted!r}; fields set: {shown}"
            )
        for name in ("averageValue", "value"):
            raw = getattr(self, name)
            if raw is not None and parse_quantity(raw) <= 0:
                raise ValueError(f"target {name} must be positive, got {raw!r}")
        return self

    def to_core(self) -> CoreMetricTarget:
        """Quantities as milli-units (``Quantity.MilliValue()``)."""
        return CoreMetricTarget(
            type=MetricTargetType(self.type),
            average_utilization=self.averageUtilization,
            average_value=None if self.averageValue is None else milli(self.averageValue),
            value=None if self.value is None else milli(self.value),
        )


def _allow_targets(target: MetricTarget, source: str, allowed: tuple[str, ...]) -> None:
    if target.type not in allowed:
        raise ValueError(
            f"a {source} metric cannot have target type {target.type}; "
            f"allowed: {', '.join(allowed)}"
        )


class ResourceMetricSource(_K8sModel):
    """``resource: {name, target}``: per-pod resource usage from metrics.k8s.io."""

    name: str = Field(min_length=1)
    target: MetricTarget

    @model_validator(mode="after")
    def _targets(self) -> ResourceMetricSource:
        _allow_targets(self.target, "Resource", ("Utilization", "AverageValue"))
        return self


class ContainerResourceMetricSource(_K8sModel):
    """``containerResource: {name, container, target}``: one container's usage."""

    name: str = Field(min_length=1)
    container: str = Field(min_length=1)
    target: MetricTarget

    @model_validator(mode="after")
    def _targets(self) -> ContainerResourceMetricSource:
        _allow_targets(self.target, "ContainerResource", ("Utilization", "AverageValue"))
        return self


class PodsMetricSource(_K8sModel):
    """``pods: {metric, target}``: a custom per-pod metric averaged over pods."""

    metric: MetricIdentifier
    target: MetricTarget

    @model_validator(mode="after")
    def _targets(self) -> PodsMetricSource:
        _allow_targets(self.target, "Pods", ("AverageValue",))
        return self


class ObjectMetricSource(_K8sModel):
    """``object: {describedObject, metric, target}``: a metric of one Kubernetes object."""

    describedObject: CrossVersionObjectReference
    metric: MetricIdentifier
    target: MetricTarget

    @model_validator(mode="after")
    def _targets(self) -> ObjectMetricSource:
        _allow_targets(self.target, "Object", ("Value", "AverageValue"))
        return self


class ExternalMetricSource(_K8sModel):
    """``external: {metric, target}``: a metric from outside the cluster."""

    metric: MetricIdentifier
    target: MetricTarget

    @model_validator(mode="after")
    def _targets(self) -> ExternalMetricSource:
        _allow_targets(self.target, "External", ("Value", "AverageValue"))
        return self


_SOURCE_FIELD = {
    "Resource": "resource",
    "Pods": "pods",
    "Object": "object",
    "External": "external",
    "ContainerResource": "containerResource",
}


class MetricSpec(_K8sModel):
    """One ``spec.metrics[]`` entry: ``type`` and exactly the source it names."""

    type: Literal["Resource", "Pods", "Object", "External", "ContainerResource"]
    resource: ResourceMetricSource | None = None
    pods: PodsMetricSource | None = None
    object: ObjectMetricSource | None = None
    external: ExternalMetricSource | None = None
    containerResource: ContainerResourceMetricSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> MetricSpec:
        wanted = _SOURCE_FIELD[self.type]
        given = [name for name in _SOURCE_FIELD.values() if getattr(self, name) is not None]
        if getattr(self, wanted) is None:
            raise ValueError(f"metric type {self.type} needs the field {wanted!r}")
        extra = [name for name in given if name != wanted]
        if extra:
            raise ValueError(
                f"metric type {self.type} takes only {wanted!r}; also set: {', '.join(extra)}"
            )
        return self

    def to_core(self) -> CoreMetricSpec:
        """Flatten into the core's MetricSpec."""
        kind = MetricSourceType(self.type)
        if self.resource is not None:
            return CoreMetricSpec(kind, self.resource.name, self.resource.target.to_core())
        if self.containerResource is not None:
            src = self.containerResource
            return CoreMetricSpec(kind, src.name, src.target.to_core(), container=src.container)
        if self.pods is not None:
            return CoreMetricSpec(kind, self.pods.metric.name, self.pods.target.to_core())
        if self.object is not None:
            obj = self.object
            return CoreMetricSpec(
                kind,
                obj.metric.name,
                obj.target.to_core(),
                described_object=f"{obj.describedObject.kind}/{obj.describedObject.name}",
            )
        assert self.external is not None  # guaranteed by _one_source
        return CoreMetricSpec(kind, self.external.metric.name, self.external.target.to_core())


class HPAScalingPolicy(_K8sModel):
    """One rate-limit policy: at most ``value`` pods or percent per ``periodSeconds``."""

    type: Literal["Pods", "Percent"]
    value: int = Field(gt=0)
    periodSeconds: int = Field(gt=0, le=1800)

    def to_core(self) -> ScalingPolicy:
        return ScalingPolicy(PolicyType(self.type), self.value, self.periodSeconds)


class HPAScalingRules(_K8sModel):
    """``behavior.scaleUp`` / ``behavior.scaleDown``."""

    stabilizationWindowSeconds: int | None = Field(default=None, ge=0, le=3600)
    selectPolicy: Literal["Max", "Min", "Disabled"] | None = None
    policies: list[HPAScalingPolicy] | None = Field(default=None, min_length=1)
    tolerance: Quantity | None = None

    @model_validator(mode="after")
    def _tolerance_not_negative(self) -> HPAScalingRules:
        if self.tolerance is not None and parse_quantity(self.tolerance) < 0:
            raise ValueError(f"tolerance must not be negative, got {self.tolerance!r}")
        return self

    def defaulted(self, default: ScalingRules) -> HPAScalingRules:
        """Mirrors ``copyHPAScalingRules``: every non-nil field of ours over ``default``."""
        return HPAScalingRules(
            stabilizationWindowSeconds=(
                self.stabilizationWindowSeconds
                if self.stabilizationWindowSeconds is not None
                else default.stabilization_window_seconds
            ),
            selectPolicy=self.selectPolicy or default.select_policy.value,
            policies=(
                self.policies
                if self.policies is not None
                else [
                    HPAScalingPolicy(
                        type=p.type.value, value=p.value, periodSeconds=p.period_seconds
                    )
                    for p in default.policies
                ]
            ),
            tolerance=self.tolerance,
        )

    def to_core(self) -> ScalingRules:
        """Needs a defaulted instance (selectPolicy and policies set)."""
        assert self.selectPolicy is not None and self.policies is not None
        return ScalingRules(
            stabilization_window_seconds=self.stabilizationWindowSeconds,
            select_policy=SelectPolicy(self.selectPolicy),
            policies=tuple(p.to_core() for p in self.policies),
            tolerance=None if self.tolerance is None else float(parse_quantity(self.tolerance)),
        )


class HorizontalPodAutoscalerBehavior(_K8sModel):
    """``spec.behavior``; both directions are filled with the API defaults on validation."""

    scaleUp: HPAScalingRules | None = None
    scaleDown: HPAScalingRules | None = None

    @model_validator(mode="after")
    def _defaults(self) -> HorizontalPodAutoscalerBehavior:
        # SetDefaults_HorizontalPodAutoscalerBehavior -> GenerateHPAScale{Up,Down}Rules.
        self.scaleUp = (self.scaleUp or HPAScalingRules()).defaulted(DEFAULT_SCALE_UP_RULES)
        self.scaleDown = (self.scaleDown or HPAScalingRules()).defaulted(DEFAULT_SCALE_DOWN_RULES)
        return self

    def to_core(self) -> Behavior:
        assert self.scaleUp is not None and self.scaleDown is not None
        return Behavior(scale_up=self.scaleUp.to_core(), scale_down=self.scaleDown.to_core())


class HorizontalPodAutoscalerSpec(_K8sModel):
    """autoscaling/v2 HorizontalPodAutoscalerSpec (the ``spec:`` of an HPA manifest).

    ``minReplicas: 0`` needs the HPAScaleToZero feature gate upstream; it is accepted here.
    """

    scaleTargetRef: CrossVersionObjectReference | None = None
    minReplicas: int | None = Field(default=1, ge=0)
    maxReplicas: int = Field(ge=1)
    metrics: list[MetricSpec] | None = None
    behavior: HorizontalPodAutoscalerBehavior | None = None

    @model_validator(mode="after")
    def _defaults_and_range(self) -> HorizontalPodAutoscalerSpec:
        if self.minReplicas is None:
            self.minReplicas = 1
        if self.maxReplicas < self.minReplicas:
            raise ValueError(
                f"maxReplicas ({self.maxReplicas}) must be greater than or equal to "
                f"minReplicas ({self.minReplicas})"
            )
        if not self.metrics:
            self.metrics = [
                MetricSpec(
                    type="Resource",
                    resource=ResourceMetricSource(
                        name="cpu",
                        target=MetricTarget(
                            type="Utilization", averageUtilization=DEFAULT_CPU_UTILIZATION
                        ),
                    ),
                )
            ]
        return self

    def to_core(self) -> HPASpec:
        """The frozen, milli-unit spec the decision core (:func:`sim.hpa.reconcile`) uses."""
        return HPASpec(
            max_replicas=self.maxReplicas,
            min_replicas=self.minReplicas if self.minReplicas is not None else 1,
            metrics=tuple(m.to_core() for m in self.metrics or ()),
            behavior=None if self.behavior is None else self.behavior.to_core(),
        )
