"""Checkpoints along an RL run, for accuracy-against-compute curves: the model is saved each time
the run passes a mark (optimizer steps, or training FLOPs for the mixed-policy trainer) and listed
in <out>/checkpoints.jsonl; with a budget the run stops at the first round end past it.

Marks are checked at the end of a generation round only (every `steps_per_generation` optimizer
steps), when every rollout counted so far has been trained on.
"""
import json
import os


def marks_callback(trainer, folder, marks, position, budget=None):
    """A TrainerCallback for `trainer`: `position(state)` is where the run stands (a step or a FLOPs
    count, the same on every rank); one checkpoint per mark passed, saved into folder/checkpoint-<i>."""
    from transformers import TrainerCallback
    marks = sorted(marks)

    class MarksCallback(TrainerCallback):
        def __init__(self):
            self.next = 0

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % args.steps_per_generation:
                return control
            where = position(state)
            while self.next < len(marks) and where >= marks[self.next]:
                save(trainer, folder, self.next, marks[self.next], where, state.global_step)
                self.next += 1
            if budget is not None and where >= budget:
                control.should_training_stop = True
            return control
    return MarksCallback()


def save(trainer, folder, index, mark, where, step):
    """The model as it is now (every rank calls this: DeepSpeed gathers), listed by the main rank."""
    path = os.path.join(folder, f"checkpoint-{index}")
    trainer.save_model(path)
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(path)
        with open(os.path.join(folder, "checkpoints.jsonl"), "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"path": path, "mark": mark, "position": where, "step": step}) + "\n")


def read(folder):
    """The checkpoints a run listed, in order: dicts with path, mark, position and step."""
    path = os.path.join(folder, "checkpoints.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
