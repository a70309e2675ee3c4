"""Mirror appliance runtime: mirrored packets -> TCP reassembly -> HTTP pairs -> Kafka."""

__version__ = "0.1.0"
