"""A writer process for the durability tests: saves ``count`` annotations and prints one line per save that
``save_annotation`` reported done. Masks are a pure function of (seed, i), recorded in ``author``."""
import sys
import time

import numpy as np

from storage import StorageBusy, Store


def mask_for(seed: int, i: int, shape) -> np.ndarray:
    rng = np.random.default_rng(seed * 100_000 + i)
    m = rng.random(shape) < 0.3
    m[rng.integers(0, shape[0]), :] = True  # never empty
    return m


def main() -> None:
    url, images, image_id, seed, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    store = Store(url, images)
    img = store.image(image_id)
    busy = 0
    for i in range(count):
        while True:
            try:
                rec = store.save_annotation(image_id, mask_for(seed, i, (img.height, img.width)), "thing",
                                            author=f"{seed}:{i}", interactions=[{"type": "click", "i": i}])
                break
            except StorageBusy:
                busy += 1
                time.sleep(0.05)
        print(f"saved {rec.id} {seed} {i}", flush=True)
    print(f"done busy={busy}", flush=True)


if __name__ == "__main__":
    main()
