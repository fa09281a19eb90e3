"""One module per verb of the command line (run, eval, dpo, finalize, agentwrite, inspect,
estimate): each turns a composed config into work through the layers below; cli.py parses
the command line and hands over. No verb but `run` imports the loop."""
