"""The names a job is routed by, checked: engines aq.yaml must define, engine classes that must
name engines, profiles that must exist. `aq add` refuses what would fail at run time (see
aq.usecases.jobs.check_names); `aq lint` names it in jobs already in the queue, and in aq.yaml
and the profiles they take it from."""

from __future__ import annotations

from collections.abc import Mapping

from aq.core.manifest import Manifest, ReviewGate
from aq.core.profile import Profile, profile_problem
from aq.core.scheduler import Routing
from aq.store.config import CONFIG_NAME, QueueConfig
from aq.store.layout import PROFILES_DIR


def undefined_engine(config: QueueConfig, name: str, what: str = "engine") -> str | None:
    """Why `name` (`what` says where it was given) names no engine, or None."""
    if name in config.engines:
        return None
    return (f"{what} {name!r} is not defined (known: {', '.join(sorted(config.engines))}): add it "
            "under engines: in aq.yaml")


def unserved_class(config: QueueConfig, engine_class: str, profile: Profile | None) -> str | None:
    """Why no engine can ever serve `engine_class` for a job of `profile`, or None."""
    return Routing(engine_classes=config.engine_classes).unserved(engine_class, profile)


def setting_problems(config: QueueConfig, profiles: Mapping[str, Profile]) -> list[str]:
    """Engines named in aq.yaml (its default_engine, its engine_classes) and in profiles that
    aq.yaml does not define (a job routed to one fails at run time), and a profile's
    engine-class that names none."""
    problems = [f"{CONFIG_NAME}: key 'default_engine': {line}"
                for line in [undefined_engine(config, config.default_engine)] if line]
    problems += [f"{CONFIG_NAME}: key 'engine_classes.{klass}': {line}"
                 for klass, names in sorted(config.engine_classes.items()) for name in names
                 if (line := undefined_engine(config, name))]
    problems += [f"{CONFIG_NAME}: key 'review': {line}"
                 for line in _missing_reviewer(config.review, profiles, config)]
    for name, profile in sorted(profiles.items()):
        source = f"{PROFILES_DIR}/{name}.md"
        problems += [f"{source}: key 'review': {line}"
                     for line in _missing_reviewer(profile.review, profiles, config)]
        problems += [f"{source}: key '{key}': {line}"
                     for key, named in (("engine", (profile.engine,)),
                                        ("prefers-engine", profile.prefers_engine))
                     for engine in named if engine and (line := undefined_engine(config, engine))]
        if profile.engine is None and profile.engine_class and (
                line := unserved_class(config, profile.engine_class, profile)):
            problems.append(f"{source}: key 'engine-class': {line}")
    return problems


def job_problems(manifest: Manifest, profiles: Mapping[str, Profile],
                 config: QueueConfig | None) -> list[str]:
    """What a job names that is not there: its profile (and a yolo it refuses), and with
    aq.yaml readable, every engine it may run (its own, its retry ladder's, its samples', its
    review's) and its own engine-class (one its profile gives is named there)."""
    problems = []
    if manifest.profile and manifest.profile not in profiles:
        problems.append(f"key 'profile': {profile_problem(manifest, profiles)}")
    elif manifest.profile and (refused := profile_problem(manifest, profiles)):
        problems.append(f"key 'yolo': {refused}")
    review = manifest.review
    problems += [f"key 'review': {line}" for line in _missing_reviewer(review, profiles)]
    if config is None:
        return problems
    named = [("engine", "engine", manifest.engine),
             *(("retry", "retry.escalate: engine", step)
               for step in (manifest.retry.escalate if manifest.retry else ())),
             *(("engines", "engines: engine", engine) for engine in manifest.engines),
             ("review", "review.engine", review.engine if review else None)]
    problems += [f"key '{key}': {line}" for key, what, engine in named
                 if engine and (line := undefined_engine(config, engine, what))]
    if manifest.engine is None and manifest.engine_class is not None and (line := unserved_class(
            config, manifest.engine_class, profiles.get(manifest.profile or ""))):
        problems.append(f"key 'engine-class': {line}")
    return problems


def _missing_reviewer(review: ReviewGate | None, profiles: Mapping[str, Profile],
                      config: QueueConfig | None = None) -> list[str]:
    """A review gate's profile that does not exist (its review job would wait in the inbox
    forever, and the job with it), and (given aq.yaml) its engine that is not defined."""
    if review is None:
        return []
    problems = []
    if review.profile and review.profile not in profiles:
        problems.append(f"profile {review.profile!r} does not exist (known: "
                        f"{', '.join(sorted(profiles)) or 'none'}); add profiles/{review.profile}.md")
    if config is not None and review.engine and (
            line := undefined_engine(config, review.engine, "review.engine")):
        problems.append(line)
    return problems
