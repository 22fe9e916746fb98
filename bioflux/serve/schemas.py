"""The HTTP API's request and response bodies (pydantic models, validated by FastAPI before
anything runs: a missing field, a wrong type or too many agents is a 422/413 naming the field)."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from bioflux.serve import settings


class AgentInput(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        # the one-of rule, stated in the schema as well as checked by ``_one_input``
        json_schema_extra={
            "oneOf": [
                {"required": ["policy", "observation"], "not": {"required": ["state"]}},
                {"required": ["policy", "state"], "not": {"required": ["observation"]}},
            ]
        },
    )

    policy: str = Field(
        max_length=settings.MAX_NAME_CHARS,
        description="policy name, e.g. 'ppo/predator' or 'random/prey'",
    )
    observation: list | None = Field(
        None,
        description=f"(S, S, 4) nested list or flat S*S*4 (S <= {settings.MAX_OBSERVATION_SIDE})",
    )
    state: dict[str, Any] | None = Field(
        None,
        description="raw state: height, width, predators, prey, [walls, energy], agent "
        f"(height*width <= {settings.MAX_STATE_CELLS})",
    )
    id: str | None = Field(
        None, max_length=settings.MAX_NAME_CHARS, description="echoed back (batch requests)"
    )

    @model_validator(mode="after")
    def _one_input(self) -> "AgentInput":
        if (self.observation is None) == (self.state is None):
            raise ValueError("give exactly one of 'observation' or 'state'")
        return self


class ActRequest(BaseModel):
    """One whole world: every listed agent's action in one call (``POST /v1/act``)."""

    model_config = ConfigDict(extra="forbid")

    state: dict[str, Any] = Field(
        description="height, width, predators and prey (lists of [row, col]), optional walls "
        f"and energy (one per predator); height*width <= {settings.MAX_STATE_CELLS}, at most "
        f"{settings.MAX_REQUEST_AGENTS} agents"
    )
    policies: dict[Literal["predator", "prey"], str] = Field(
        description="the policy per species, e.g. {'predator': 'ppo/predator', 'prey': "
        "'random/prey'}"
    )
    sample: StrictBool = Field(False, description="sample the actions instead of the argmax")
    details: StrictBool = Field(
        False, description="also return each agent's probabilities, confidence and reasoning"
    )
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="seed of the sampling")


class EnsembleRequest(BaseModel):
    """A named ensemble of served policies (``POST /v1/ensembles``, admin)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=settings.MAX_NAME_CHARS, description="served as <name>/<species>")
    combine: Literal["average", "vote"] = Field("average", description="how members combine")
    members: dict[str, float] = Field(
        min_length=2,
        max_length=64,
        description="policy names without the species (e.g. 'ppo', 'lotka_volterra', "
        "'ppo@<run>') → weights > 0",
    )


class PredictRequest(AgentInput):
    sample: StrictBool = Field(False, description="sample the action instead of the argmax")
    fallback: StrictBool = Field(
        False, description="answer with a safe default if the model is down or fails"
    )


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agents: list[AgentInput] = Field(
        min_length=1, description=f"at most {settings.MAX_REQUEST_AGENTS}"
    )
    sample: StrictBool = Field(False, description="sample the actions instead of the argmax")
    fallback: StrictBool = Field(
        False,
        description="an agent whose model is down or fails numerically gets the built-in random "
        "policy's answer with degraded: true",
    )
    partial: StrictBool = Field(
        False,
        description="per-agent results: answer 200 with one entry per agent, in order; an agent "
        "that fails gets {'id', 'policy', 'error': {'status', 'detail'}} (the status it would "
        "get alone: 404 unknown policy, 422 bad observation or numerical failure, 503 model "
        "down, 500 internal) and the others their predictions. Default false: the first "
        "failing agent fails the whole request with its status",
    )


class Prediction(BaseModel):
    id: str | None = None
    policy: str
    action: int
    action_name: str
    confidence: float
    probabilities: dict[str, float]
    reasoning: str
    degraded: bool = False


class ItemError(BaseModel):
    status: int = Field(description="the HTTP status this agent alone would have got")
    detail: str


class BatchItemError(BaseModel):
    """A failed agent's entry in a ``partial`` batch answer."""

    id: str | None = None
    policy: str = Field(description="the policy name as the request gave it")
    error: ItemError
