"""`edit-mobile distill` from parsed arguments to a written student folder."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from edit_mobile.distill.cli import WORK_SUFFIX
from edit_mobile.errors import UserError

KIND = "distill"


def _options(args):
    from edit_mobile.distill.engine import DistillOptions

    return DistillOptions(schedule=args.schedule, batch=args.batch, lr=args.lr, weights=args.loss_weights,
                          train=args.train, seed=args.seed, checkpoint_every=args.checkpoint_every,
                          accumulate=args.accumulate, gradient_checkpointing=args.gradient_checkpointing,
                          bf16=args.bf16, shard=args.shard)


def _student(args, teacher):
    from edit_mobile.models import is_edit, load_transformer, model_family
    from edit_mobile.models.config import EDiTConfig
    from edit_mobile.models.conversion import convert

    if args.student is None:
        options = EDiTConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EDiTConfig)})
        return convert(teacher, options)
    student = load_transformer(args.student)
    if not is_edit(student):
        raise UserError(f"--student {args.student} is not an EDiT student; pass a `convert` output")
    if model_family(student) != model_family(teacher):
        raise UserError(f"teacher {args.teacher} is {model_family(teacher)} but --student {args.student} is "
                        f"{model_family(student)}; pass a student converted from this teacher")
    return student


def _captions(args) -> list[str]:
    from edit_mobile.calibration.prompts import read_prompts
    from edit_mobile.models.presets import SHIPPED

    if args.prompts is not None:
        return read_prompts(args.prompts)[: args.samples]
    if args.images is not None:
        return []
    if args.teacher in SHIPPED:
        from edit_mobile.shapes import sample_training_captions

        return [c.caption for c in sample_training_captions(args.samples, seed=args.seed)]
    return read_prompts(None)


def _all_shapes_captions(captions: list[str]) -> bool:
    from edit_mobile.shapes import parse_caption

    try:
        for caption in captions:
            parse_caption(caption)
    except (ValueError, UserError):
        return False
    return bool(captions)


def _work_folder(args, output: Path) -> Path:
    from edit_mobile.distill.engine import CHECKPOINT

    work = output.with_name(output.name + WORK_SUFFIX)
    has_checkpoint = (work / CHECKPOINT / "state.json").is_file()
    if args.resume and not has_checkpoint:
        raise UserError(f"--resume: no checkpoint in {work}; run without --resume to start")
    if has_checkpoint and not args.resume:
        raise UserError(f"{work} holds a checkpoint of an unfinished run; pass --resume to continue it, "
                        "or remove that folder to start over")
    if work.exists() and not has_checkpoint and any(p.name not in ("cache", "log.jsonl", "loss.png") for p in work.iterdir()):
        raise UserError(f"{work} exists and is not a distill work folder; move it away")
    return work


def distill(args) -> int:
    from edit_mobile.distill.data import DataBuilder, read_image_folder
    from edit_mobile.distill.engine import Distiller, Distributed
    from edit_mobile.distill.objective import objective_for
    from edit_mobile.fileio import check_output_dir
    from edit_mobile.models import is_edit, load_transformer, pipeline_folder_of
    from edit_mobile.models.families import family_of
    from edit_mobile.models.signature import default_resolution
    from edit_mobile.training.loop import TrainingLog

    inputs = [p for p in (args.teacher, args.student, args.prompts, args.images) if p]
    output = check_output_dir(args.output, KIND, inputs, args.force)
    work = _work_folder(args, output)
    images = read_image_folder(Path(args.images)) if args.images else []
    env = Distributed(shard=args.shard)
    try:
        teacher = load_transformer(args.teacher)
        if is_edit(teacher):
            raise UserError(f"{args.teacher} is an EDiT student; TEACHER must be the model it was converted from")
        student = _student(args, teacher)
        pipeline = pipeline_folder_of(args.teacher)
        captions = _captions(args)
        if args.tune_guidance and not (pipeline is not None and _all_shapes_captions(captions)):
            raise UserError("--tune-guidance scores shapes-world images: it needs a shapes teacher's pipeline "
                            "folder and shapes captions; drop the option for this teacher")
        if args.schedule is None:
            args.schedule = [(default_resolution(teacher)[0], 300)]
        options = _options(args)
        work.mkdir(parents=True, exist_ok=True)
        builder = DataBuilder(teacher, pipeline, work / "cache", args.prompt_tokens, args.steps, args.guidance, args.seed)
        objective = objective_for(family_of(teacher).scheduler(pipeline))
        stages = []
        for pixels, _ in options.schedule:
            if env.main:  # rank 0 makes the cache, the others read it
                data = builder.build((pixels, pixels), captions, images)
            env.barrier()
            if not env.main:
                data = builder.build((pixels, pixels), captions, images)
            stages.append(data)
        distiller = Distiller(teacher, student, stages, objective, options, work, env)
        if args.resume:
            distiller.load_checkpoint()
        log = TrainingLog(work, options.total_steps, f"distill {args.teacher}", resume_at=distiller.step) if env.main else None
        distiller.run(log)
        trained = distiller.trained_student()  # every rank: gathering a sharded student is a collective
        if env.main:
            summary = log.close()
            _write_student(args, inputs, output, work, trained, pipeline, options, summary, captions)
        env.barrier()
    finally:
        env.close()
    return 0


def _write_student(args, inputs: list, output: Path, work: Path, student, pipeline, options, summary,
                   captions) -> None:
    from edit_mobile.distill.engine import CHECKPOINT
    from edit_mobile.fileio import atomic_output_dir
    from edit_mobile.models.pipeline_folder import write_student_pipeline

    result = work / "student"
    shutil.rmtree(result, ignore_errors=True)
    result.mkdir()
    if pipeline is None:
        student.save_pretrained(result, safe_serialization=True)
    else:
        write_student_pipeline(pipeline, student, result)
    record = {"teacher": args.teacher, "options": options.to_dict(), **summary}
    shapes = pipeline is not None and _all_shapes_captions(captions)
    if args.tune_guidance and shapes:  # before the held-out scores, which then use the tuned scale
        from edit_mobile.distill.guidance import tune_guidance

        record["guidance_tuning"] = tune_guidance(result, args.tune_guidance, args.tune_samples, args.seed)
    if args.eval_samples and shapes:
        record["evaluate"] = _evaluate(result, args, pipeline)
    (result / "distill.json").write_text(json.dumps(record, indent=2) + "\n")
    for name in ("log.jsonl", "loss.png"):
        shutil.copy2(work / name, result / name)
    with atomic_output_dir(output, KIND, inputs, args.force) as staging:
        shutil.copytree(result, staging, dirs_exist_ok=True)
    shutil.rmtree(work / CHECKPOINT, ignore_errors=True)  # finished: nothing to resume
    shutil.rmtree(result, ignore_errors=True)
    print(f"wrote the distilled {type(student).__name__} to {output}")
    if "guidance_tuning" in record:
        print(f"recorded guidance {record['guidance_tuning']['guidance']:g} (the teacher's: "
              f"{record['guidance_tuning']['teacher_guidance']:g})")
    if "evaluate" in record:
        e = record["evaluate"]
        print(f"held-out prompt accuracy: student {e['student']['prompt_accuracy']:.3f}, "
              f"teacher {e['teacher']['prompt_accuracy']:.3f}; image PSNR vs teacher "
              f"{e['student']['image_psnr_vs_teacher']:.1f} dB")


def _evaluate(student_folder: Path, args, pipeline: Path) -> dict:
    """Held-out captions, student against teacher at the same seeds."""
    from edit_mobile.runtime.evaluate import Settings, evaluate

    settings = Settings(seed=args.seed)
    student, _ = evaluate(str(student_folder), ("heldout",), args.eval_samples, settings, teacher=args.teacher)
    teacher, _ = evaluate(args.teacher, ("heldout",), args.eval_samples, settings)
    keep = ("prompt_accuracy", "attribute_accuracy", "per_attribute", "n", "image_psnr_vs_teacher")
    return {"captions": "heldout", "student": {k: student[k] for k in keep if k in student},
            "teacher": {k: teacher[k] for k in keep if k in teacher}}
