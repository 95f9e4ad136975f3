"""A zero-shot LLM agent behind a chat endpoint: the GPT-4 / Mistral-7B style baselines.

Such a model answers in free text, so its reply goes through the one shared
action parser; a reply naming no valid action is returned as ``None`` and the
evaluator charges the env's invalid-action penalty for it. It is a sequential
``eval.baselines.Agent``: ``evaluate_agent`` and ``play_episode`` drive it.
"""

from __future__ import annotations

from reflectrl.agent.prompts import enumerate_actions
from reflectrl.envs.action_parser import parse_action
from reflectrl.envs.base import Observation, TextEnv
from reflectrl.teachers.openai_compat import ChatEndpoint

AGENT_INSTRUCTION = """\
You are an agent acting in a text environment, one action per turn.
Each turn you see the current state (the task, what happened so far and the \
latest observation), followed by the valid actions, one per line as "<id>. <action>".
Choose the single action that makes the most progress towards completing the task.
Answer with the id of exactly one listed action (for example: 3) and nothing else."""

ACTIONS_HEADER = "Valid actions:"
ANSWER_REQUEST = "Answer with the id of one action."


class EndpointAgent:
    """Chooses actions by asking an LLM endpoint, with no training: a zero-shot baseline."""

    def __init__(self, endpoint: ChatEndpoint, instruction: str | None = None) -> None:
        self.endpoint = endpoint
        self.instruction = AGENT_INSTRUCTION if instruction is None else instruction
        #: why the last reply named no action (None when it named one), for evaluation logs
        self.last_parse_error: str | None = None

    def messages(self, observation: Observation) -> list[dict[str, str]]:
        """The chat request for one step."""
        if not observation.actions:
            raise ValueError("the observation lists no valid actions; the episode has probably ended")
        user = (
            observation.text.rstrip("\n")
            + f"\n\n{ACTIONS_HEADER}\n"
            + enumerate_actions(observation.actions)
            + f"\n{ANSWER_REQUEST}"
        )
        return [{"role": "system", "content": self.instruction}, {"role": "user", "content": user}]

    def act(self, env: TextEnv, observation: Observation) -> tuple[int | None, str]:
        """(index of the chosen action, or None when the reply names none; the raw reply).

        ``env`` is part of the shared agent interface; a zero-shot LLM sees only
        the observation, so it is not read.
        """
        # a reply naming no action is still the model's answer: it is cached and charged as invalid
        reply = self.endpoint.complete(self.messages(observation))
        parsed = parse_action(reply, observation.actions)
        self.last_parse_error = parsed.error
        return parsed.index, reply
