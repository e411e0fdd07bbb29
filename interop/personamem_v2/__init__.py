"""PersonaMem-v2 (arXiv 2512.06688) interop: their published files in, our runs out.

- ``format``: strict readers of their benchmark CSVs, chat histories and raw persona files;
- ``load``: a folder of their files as one run in the store (``pmv2-<hash>``), memories built by
  replaying the histories through the session runner's memory feeding;
- ``export``: a run (loaded or simulated) written back in their format;
- ``api``: the command line's ``--personamem-v2`` paths as functions on a store path.
"""

from personasim.interop.personamem_v2.export import export_personamem_v2
from personasim.interop.personamem_v2.format import PersonaMemFormatError
from personasim.interop.personamem_v2.load import build_memory_snapshots, load_personamem_v2, personamem_v2_run_id

__all__ = [
    "PersonaMemFormatError",
    "build_memory_snapshots",
    "export_personamem_v2",
    "load_personamem_v2",
    "personamem_v2_run_id",
]
