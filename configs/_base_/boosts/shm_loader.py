# Boost fragment: batch payloads travel from loader workers through a private shared-memory
# ring (pays where transfer dominates: uint8 images, JPEG bytes; docs/data.md).
bevboost_boosts = dict(shm=dict())
