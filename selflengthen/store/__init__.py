"""What lives on disk: run and iteration paths, atomic writes and manifests (artifacts),
resumable sample logs (samples), the one-writer lock of a run (runlock) and its status.json
(status), the seed pool (seeds), what earlier iterations hand on (runs), and training sets
in the formats trainers read (export). Imports only core."""
