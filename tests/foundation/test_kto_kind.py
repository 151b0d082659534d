"""The kto kind (issue 18's proof of the registry): its pipelines, its section, its CRD schema and
its example, each read from the registry like every other kind's."""

from __future__ import annotations

from typing import Any

import cel
import pytest
from rlhf_api.rules import ALLOWED_PIPELINES, PIPELINE_SHAPES, spec_cel_rules
from rlhf_api.stages import POLICY_STAGES, kind_of
from rlhf_api.stages.kto import KTOStageConfig
from rlhf_api.trainer_job import TrainerJobConfig
from rlhf_api.validation import RunInvalid, parse_run
from rlhf_operator.crd import crd
from rlhf_operator.plan import plan

from .conftest import load_example, spec_with

PAIRS = {"source": "builtin:arithmetic", "format": "preference"}
RLAIF = {"dataset": {"source": "builtin:arithmetic"}, "judge": {"name": "builtin:arithmetic-judge"}}


def _kto_spec(pipeline: list[str], **sections: Any) -> dict[str, Any]:
    return spec_with(**{"reward": None, "ppo": None, **sections, "pipeline": pipeline, "kto": {"dataset": PAIRS}})


def _cel_accepts(document: dict[str, Any]) -> bool:
    rules = [r for r in spec_cel_rules() if r.get("fieldPath") == ".pipeline"]
    return all(cel.evaluate(r["rule"], {"self": document["spec"]}) for r in rules)


@pytest.mark.parametrize(
    ("pipeline", "accepted"),
    [
        (["sft", "kto"], True),
        (["kto"], True),
        (["sft", "reward", "kto"], False),
        (["kto", "dpo"], False),
        (["sft", "rlaif", "kto"], False),
        (["kto", "sft"], False),
    ],
)
def test_kto_pipelines_python_and_cel_agree(pipeline: list[str], accepted: bool) -> None:
    sections: dict[str, Any] = {"dpo": {"dataset": PAIRS}, "reward": {"dataset": PAIRS}, "rlaif": RLAIF}
    sections = {name: section for name, section in sections.items() if name in pipeline}
    document = _kto_spec(pipeline, **sections)
    if "sft" not in pipeline:
        document["spec"].pop("sft")
    assert (pipeline in ALLOWED_PIPELINES) is accepted
    assert _cel_accepts(document) is accepted
    if accepted:
        run = parse_run(document)
        assert run.spec.pipeline == pipeline and run.spec.section("kto") is not None
    else:
        with pytest.raises(RunInvalid) as invalid:
            parse_run(document)
        assert any("is not one of" in e and "kto follows sft or stands alone" in e for e in invalid.value.errors)


def test_kto_is_a_policy_stage_on_preference_data_after_sft() -> None:
    kind = kind_of("kto")
    assert kind.data == "preference" and kind.is_policy and kind.starts_from_sft
    assert "kto" in POLICY_STAGES and "[sft, " in PIPELINE_SHAPES and "kto" in PIPELINE_SHAPES
    assert kind.memory is not None and kind.memory.sequences_per_example == 2


def test_kto_section_defaults_and_limits() -> None:
    section = KTOStageConfig.model_validate({"dataset": PAIRS})
    training = section.training
    assert (training.beta, training.loss_type, training.batch_size) == (0.1, "kto", 8)
    assert (training.desirable_weight, training.undesirable_weight) == (1.0, 1.0)
    assert section.lora_settings() is not None and section.lora_settings().enabled  # type: ignore[union-attr]
    # The KL estimate pairs each example with another completion of its batch.
    with pytest.raises(ValueError, match="batchSize"):
        KTOStageConfig.model_validate({"dataset": PAIRS, "training": {"batchSize": 1}})
    with pytest.raises(ValueError, match="lossType"):
        KTOStageConfig.model_validate({"dataset": PAIRS, "training": {"lossType": "sigmoid"}})


def test_kto_in_the_crd_and_the_trainer_file() -> None:
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    training = spec["properties"]["kto"]["properties"]["training"]["properties"]
    assert training["batchSize"]["minimum"] == 2
    assert training["lossType"]["enum"] == ["kto", "apo_zero_unpaired"]
    assert "kto" in spec["properties"]["pipeline"]["items"]["enum"]


@pytest.mark.parametrize(
    ("pipeline", "start"), [(["sft", "kto"], "/ws/demo/sft/merged"), (["kto"], "builtin:tiny-llama")]
)
def test_the_plan_starts_kto_from_the_sft_model_when_there_is_one(pipeline: list[str], start: str) -> None:
    document = _kto_spec(pipeline)
    if "sft" not in pipeline:
        document["spec"].pop("sft")
    plans = plan(parse_run(document), "/ws")
    kto = plans[-1]
    assert kto.name == "kto" and kto.config is not None and kto.output_dir == "/ws/demo/kto"
    assert kto.config.model.name == start and kto.config.reward_model is None
    # what the operator puts in the ConfigMap parses back into the trainer's model
    assert TrainerJobConfig.model_validate(kto.config_file()) == kto.config
    assert isinstance(kto.config.section_as(KTOStageConfig), KTOStageConfig)


def test_the_kto_quickstart_is_sft_then_kto() -> None:
    run = parse_run(load_example("quickstart-kto.yaml"))
    assert run.spec.pipeline == ["sft", "kto"]
    kto = run.spec.section("kto")
    assert kto is not None and kto.dataset is not None and kto.dataset.source == "builtin:arithmetic"
    assert kto.dataset.format == "preference" and kto.lora.enabled
