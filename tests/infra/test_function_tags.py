"""The local platform maps a synthesized state machine's Lambda ARNs back to the topology functions
it runs by the tag RaglineFunction puts on each function (`ragline.local.stepfunctions`), so every
topology function must carry its own name, and no other function may claim one."""

from __future__ import annotations

from ragline.local.stepfunctions import tags
from ragline.topology import FUNCTION_TAG, TOPOLOGY


def test_every_topology_function_is_tagged_with_its_name_once(synth):
    functions = synth.resources("AWS::Lambda::Function").values()
    tagged = [tags(fn)[FUNCTION_TAG] for fn in functions if FUNCTION_TAG in tags(fn)]
    assert sorted(tagged) == sorted(spec.name for spec in TOPOLOGY.functions)
