"""AgentWrite, LongWriter's plan-then-write, in one package: the plan and write prompts and
their parsers (plan.py), the chain over an engine (write.py), and the LongWriter-style
training set (mix.py). The `agentwrite` verb is selflengthen.commands.agentwrite; the loop
runs the chain through loop.synth."""
