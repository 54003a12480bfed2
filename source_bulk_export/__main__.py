import asyncio

from source_bulk_export import Connector

asyncio.run(Connector().serve())
