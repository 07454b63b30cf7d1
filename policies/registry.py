"""Policy builders by name. A builder trains (or just constructs) a policy from demonstrations.

Builder signature: `build(cfg: dict, demos: EpisodeStore, out_dir: Path) -> Policy | (env -> Policy)`.
A factory (env -> Policy) is for policies that read privileged simulator state.
"""

from toto_robot.registry import Registry

POLICIES = Registry("policy")
POLICIES.register("scripted_expert", "policies.scripted:build_scripted_expert")
