"""Policies trained or scripted on top of the floor, built by name from `conf/policy/*.yaml`.

`policies.registry.POLICIES` maps a policy name to a builder; behaviour-cloning algorithms on
the frozen Toto encoder register here next to the scripted expert.
"""
