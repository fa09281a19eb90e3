"""One module per verb of the command line (run, eval, dpo, finalize, agentwrite, inspect,
estimate), each with an entry function that its row of the verb table (config/verbs.py)
names: a Hydra verb's entry takes the composed config, any other verb's its arguments; each
turns them into work through the layers below, and cli.py dispatches to it. No verb but
`run` imports the loop. Adding a verb: its module here, its conf file, one row in
config/verbs.py."""
