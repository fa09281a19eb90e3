"""AgentWrite, LongWriter's plan-then-write, in one package: the plan and write prompts and
their parsers (plan.py), the chain over an engine (write.py), its rows as the loop's stage 3
(in_loop.py; `loop.synth`), and the LongWriter-style training set (mix.py). The `agentwrite`
verb is selflengthen.commands.agentwrite."""
