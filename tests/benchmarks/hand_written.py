"""The tiny-MLP loop of loop_overhead.cpp, hand-written in Python with PyTorch: the same shapes, AdamW, linear
schedule, clipping and logging every 500 steps, on one thread, timed by the thread's CPU clock. Prints
{"steps_per_second": median, "torch": version} as JSON.  Usage: python3 hand_written.py [repeats] [epochs]"""
import json
import statistics
import sys
import time

import torch

SAMPLES, BATCH, CLASSES = 2048, 32, 4


def run(x, y, epochs):
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, CLASSES))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.0)
    total = SAMPLES // BATCH * epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (total - step) / total)
    running, step = torch.zeros(()), 0
    for epoch in range(epochs):
        order = torch.randperm(SAMPLES, generator=torch.Generator().manual_seed(42 + epoch))
        for b in range(SAMPLES // BATCH):
            rows = order[b * BATCH:(b + 1) * BATCH]
            loss = torch.nn.functional.cross_entropy(model(x.index_select(0, rows)), y.index_select(0, rows))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            running += loss.detach()
            step += 1
            if step % 500 == 0:
                running.item()
                running.zero_()
    return step


def main():
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    torch.set_num_threads(1)
    torch.manual_seed(1)
    y = torch.randint(0, CLASSES, (SAMPLES,))
    x = torch.randn(SAMPLES, 16) + y.float().unsqueeze(1)
    rates = []
    for _ in range(repeats):
        start = time.thread_time()
        steps = run(x, y, epochs)
        rates.append(steps / (time.thread_time() - start))
    print(json.dumps({"steps_per_second": statistics.median(rates), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
