"""Preparation: what the scenarios need, made before anything is measured.

Scenarios that need accounts get them first (see prepare()): ``profile``
needs one logged-in account, ``login`` needs BENCH_ACCOUNTS of them. The
auth service rate-limits by client address (registrations 5 per 30 min;
logins 20/min per address and 5/min per account), so preparation registers
each account from its own loopback address and the login scenario spreads
its VUs over addresses and accounts so that no limit is reached: see
plans.AddressBlock and plans.plan_login().

The upload scenarios send a JPEG that preparation makes with Pillow (a
dependency of the media service, so in this venv): see make_photo(). The
media service allows each user 30 uploads per 30 minutes, so preparation
also registers and logs in enough accounts for every upload to have a user
with budget left: see plans.plan_upload(). What a run uploads is deleted
after it (see delete_uploads()): the dev stack's object store is small.

The posts scenarios' dataset and writers' pools are dataset.py's:
prepare_social() asks it for what the scenarios need.
"""

from __future__ import annotations

import json
import random
import secrets
import string
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image
from social_stack.paths import REPO_ROOT

from .dataset import ZIPF_S, Social
from .model import Scenario, Settings, connections_for
from .plans import (
    POSTS_BURST,
    REGISTRATION_ADDRESSES,
    UPLOADS_PER_ACCOUNT,
    AddressBlock,
    ComposePlan,
    LoginPlan,
    MixPlan,
    Plan,
    TimelinePlan,
    UploadPlan,
    login_plans,
    plan_compose,
    plan_mix,
    upload_plans,
)
from .stackapi import BenchError, delete, login, register

# Registrations in flight at once during preparation (each costs a hash).
REGISTER_THREADS = 8
# A sharp photo's detail (fine noise) over soft shapes (coarse noise) over
# gradients, as make_photo() mixes them: ~3 bits a pixel at JPEG quality 90,
# as phone photos have (0.8 MB for 2 MP, 4.5 MB for 12 MP).
PHOTO_FINE_NOISE = 0.15
PHOTO_COARSE_NOISE = 0.4
PHOTO_QUALITY = 90


# --------------------------------------------------------------------------- photos


def make_photo(path: Path, width: int, height: int) -> None:
    """Write a photo-like JPEG of ``width`` x ``height`` to ``path``.

    Gradients, soft shapes and sharp detail, so that it weighs and costs what
    a camera's photo does (the resizes keep detail, unlike pure noise), with
    the EXIF block a phone writes: make, model, orientation, date. Seeded by
    the size: every run uploads the same bytes.
    """
    rng = random.Random(width * height)  # noqa: S311 - pixels, not secrets
    picture = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").rotate(90).resize((width, height)),
            Image.linear_gradient("L").resize((width, height)),
            Image.radial_gradient("L").resize((width, height)),
        ),
    )
    small = (width // 16, height // 16)
    coarse = Image.frombytes("RGB", small, rng.randbytes(small[0] * small[1] * 3))
    picture = Image.blend(
        picture, coarse.resize((width, height), Image.Resampling.BICUBIC), PHOTO_COARSE_NOISE
    )
    fine = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    picture = Image.blend(picture, fine, PHOTO_FINE_NOISE)
    exif = Image.Exif()
    exif[0x010F] = "BenchCam"  # Make
    exif[0x0110] = "Bench Phone 1"  # Model
    exif[0x0112] = 1  # Orientation: upright
    exif[0x0132] = "2026:01:01 12:00:00"  # DateTime
    picture.save(path, "JPEG", quality=PHOTO_QUALITY, exif=exif.tobytes())


# --------------------------------------------------------------------------- preparation


@dataclass(frozen=True)
class Prepared:
    """What preparation made: placeholder values, the login and upload
    plans, the photos (by scenario name), and the posts scenarios' plans
    (by scenario name and warm-up or not)."""

    values: Mapping[str, str] = field(default_factory=dict)
    warmup_plan: LoginPlan | None = None
    measure_plan: LoginPlan | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    upload_plans: Mapping[tuple[str, bool], UploadPlan] = field(default_factory=dict)
    photos: Mapping[str, Path] = field(default_factory=dict)
    social_plans: Mapping[tuple[str, bool], Plan] = field(default_factory=dict)

    def resolve(self, scenario: Scenario) -> Scenario:
        """``scenario`` with its ``${name}`` placeholders filled in."""
        if not scenario.needs:
            return scenario

        def fill(text: str) -> str:
            return string.Template(text).substitute(self.values)

        try:
            return replace(
                scenario,
                path=fill(scenario.path),
                headers={name: fill(value) for name, value in scenario.headers.items()},
                body=fill(scenario.body),
            )
        except (KeyError, ValueError) as exc:
            raise BenchError(f"{scenario.name}: bad placeholder {exc}") from None

    def plan(self, scenario: Scenario, *, warmup: bool) -> Plan | None:
        if (scenario.name, warmup) in self.social_plans:
            return self.social_plans[scenario.name, warmup]
        if "uploads" in scenario.needs:
            return self.upload_plans[scenario.name, warmup]
        if "accounts" not in scenario.needs:
            return None
        return self.warmup_plan if warmup else self.measure_plan


# What the original preparation below makes; the rest is the posts scenarios'.
ACCOUNT_NEEDS = frozenset({"token", "accounts", "uploads"})


def prepare_social(
    settings: Settings,
    scenarios: list[Scenario],
    block: AddressBlock,
    workdir: Path,
    social: Social,
) -> Prepared:
    """What the posts scenarios need (see dataset.py): the dataset, then
    per posting run (warm-up and measurement apart) writers with their
    pools of fresh media, and the files the scripts read. All uploads are
    done here, before anything is measured."""
    needs = frozenset().union(*(s.needs for s in scenarios))
    if not needs:
        return Prepared()
    started = time.monotonic()
    values: dict[str, str] = {}
    plans: dict[tuple[str, bool], Plan] = {}
    info: dict[str, Any] = {}
    phases = [(True, settings.warmup_s), (False, settings.duration_s)]
    # The scripts' files, written once the tokens in them are refreshed.
    writes: list[Callable[[], None]] = []
    if "social" in needs:
        dataset = social.prepare(settings.social_users, settings.social_follows, block.social)
        info.update(
            dataset=dataset.run_id,
            users=len(dataset.users),
            follows_per_user=dataset.follows,
            zipf_s=ZIPF_S,
            cache=str(social.cache_file.relative_to(REPO_ROOT)),
        )
    if "feed" in needs:
        info["feed_posts_made"] = social.ensure_feed(block.feed_author)
    if "compose" in needs:
        (check,) = social.pools_for("create_post check", 1, 1)
        values["compose_token"], values["compose_media"] = check.user.access_token, check.media[0]
    for scenario in scenarios:
        vus = connections_for(settings, scenario)
        for warmup, duration_s in phases:
            if not duration_s:
                continue
            phase = f"{scenario.name} {'warm-up' if warmup else 'measurement'}"
            file = workdir / f"{scenario.name}-{'warmup' if warmup else 'measure'}"
            plan: Plan
            if "compose" in scenario.needs:
                writers = plan_compose(settings.compose_max_rps, vus, duration_s)
                pools = social.pools_for(phase, writers)
                writes.append(partial(social.write_pools_file, pools, file.with_suffix(".json")))
                plan = ComposePlan(vus, writers, POSTS_BURST, str(file.with_suffix(".json")))
            elif "mix" in scenario.needs:
                threads = min(settings.threads, vus)
                per_thread = plan_mix(settings.mix_max_rps, threads, vus, duration_s)
                pools = social.pools_for(phase, threads * per_thread)
                by_thread = [pools[t * per_thread : (t + 1) * per_thread] for t in range(threads)]
                writes.append(partial(social.write_mix_file, by_thread, file.with_suffix(".txt")))
                plan = MixPlan(threads, per_thread, POSTS_BURST, str(file.with_suffix(".txt")))
            elif "social" in scenario.needs:
                users_file = str(workdir / "social_users.json")
                plan = TimelinePlan(vus, scenario.name, users_file, settings.base_url)
            else:
                continue
            plans[scenario.name, warmup] = plan
    # Tokens the scripts get must outlive the run: refreshed after the uploads.
    if social.dataset is not None:
        social.fresh_tokens()
        social.write_users_file(workdir / "social_users.json")
        for write in writes:
            write()
        values["social_token"] = social.dataset.users[0].access_token
        values["social_user"] = social.dataset.users[0].username
    info["uploads"] = sum(len(pool.media) for pool in social.pools)
    info["seconds"] = round(time.monotonic() - started, 1)
    print(f"bench: social: prepared in {info['seconds']}s", file=sys.stderr)
    return Prepared(values=values, info={"social": info}, social_plans=plans)


def prepare(
    settings: Settings,
    scenarios: list[Scenario],
    block: AddressBlock,
    workdir: Path,
    social: Social,
) -> Prepared:
    """What ``scenarios`` need, before any measurement: the posts scenarios'
    (prepare_social()) first, then the accounts of the others
    (prepare_accounts()), whose access token is then the freshest."""
    posts = prepare_social(
        settings, [s for s in scenarios if s.needs - ACCOUNT_NEEDS], block, workdir, social
    )
    accounts = prepare_accounts(
        settings, [s for s in scenarios if s.needs & ACCOUNT_NEEDS], block, workdir
    )
    return replace(
        accounts,
        values={**accounts.values, **posts.values},
        info={**accounts.info, **posts.info},
        social_plans=posts.social_plans,
    )


def prepare_accounts(
    settings: Settings, scenarios: list[Scenario], block: AddressBlock, workdir: Path
) -> Prepared:
    """Register and log in what ``scenarios`` need, before any measurement.

    Accounts are named ``bench_<run id>_<n>`` and each is registered from its
    own address of ``block``. Account 0 logs in once for the access token;
    with "accounts", BENCH_ACCOUNTS more go to ``workdir/accounts.json`` for
    k6_login.js; with "uploads", the accounts the upload plans need come
    last, each logs in once from its own address, and their access tokens go
    to ``workdir/tokens.json`` for k6_upload.js, beside the photos. Nothing is
    registered if the plans do not fit.
    """
    needs = frozenset().union(*(s.needs for s in scenarios))
    if not needs:
        return Prepared()
    spread = next((s for s in scenarios if "accounts" in s.needs), None)
    warmup_plan = measure_plan = None
    if spread is not None:
        active = spread.connections or settings.connections
        warmup_plan, measure_plan = login_plans(settings, block, active)
    uploads = upload_plans(settings, [s for s in scenarios if "uploads" in s.needs], workdir)
    uploaders = sum(plan.accounts for plan in uploads.values())
    run_id = secrets.token_hex(4)
    count = 1 + (settings.accounts if spread is not None else 0) + uploaders
    if count > REGISTRATION_ADDRESSES:
        raise BenchError(
            f"uploads: {uploaders} accounts, for up to {settings.upload_max_rps} uploads/s "
            f"within {UPLOADS_PER_ACCOUNT} per account, make {count} registrations, more than "
            f"the {REGISTRATION_ADDRESSES} addresses they come from: shorten BENCH_DURATION "
            "or, if the stack is slower, lower BENCH_UPLOAD_MAX_RPS"
            + (" (or BENCH_ACCOUNTS)" if spread is not None else "")
        )
    accounts = [(f"bench_{run_id}_{i:04d}", "bench-" + secrets.token_hex(12)) for i in range(count)]
    first, last = block.registration(0), block.registration(count - 1)
    print(f"bench: preparing: registering {count} account(s) from {first}..{last}", file=sys.stderr)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=REGISTER_THREADS) as pool:
        futures = [
            pool.submit(register, settings, username, password, block.registration(i))
            for i, (username, password) in enumerate(accounts)
        ]
        try:
            for done, future in enumerate(as_completed(futures), 1):
                future.result()
                if done % 50 == 0 or done == count:
                    print(f"bench: preparing: {done}/{count} registered", file=sys.stderr)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    username, password = accounts[0]
    values = {
        "access_token": login(settings, username, password, first),
        "username": username,
        "password": password,
    }
    info: dict[str, Any] = {
        "run_id": run_id,
        "address_block": str(block),
        "registration_addresses": f"{first}-{last}",
        "accounts": count,
    }
    photos: dict[str, Path] = {}
    if uploads:
        # One login per account, each from the address it registered from.
        print(f"bench: preparing: logging in {uploaders} uploader(s)", file=sys.stderr)
        with ThreadPoolExecutor(max_workers=REGISTER_THREADS) as pool:
            tokens = list(
                pool.map(
                    lambda i: login(settings, *accounts[i], block.registration(i)),
                    range(count - uploaders, count),
                )
            )
        (workdir / "tokens.json").write_text(json.dumps(tokens))
        info["uploaders"] = uploaders
        for scenario in scenarios:
            if scenario.photo is not None:
                photos[scenario.name] = Path(uploads[scenario.name, False].photo)
                make_photo(photos[scenario.name], *scenario.photo)
    if warmup_plan is not None or measure_plan is not None:
        accounts_file = workdir / "accounts.json"
        accounts_file.write_text(
            json.dumps(
                [{"username": u, "password": pw} for u, pw in accounts[1 : 1 + settings.accounts]]
            )
        )
        if warmup_plan is not None:
            warmup_plan = replace(warmup_plan, accounts_file=str(accounts_file))
        if measure_plan is not None:
            measure_plan = replace(measure_plan, accounts_file=str(accounts_file))
    info["seconds"] = round(time.monotonic() - started, 1)
    print(f"bench: preparing: done in {info['seconds']}s", file=sys.stderr)
    return Prepared(values, warmup_plan, measure_plan, info, uploads, photos)


def delete_uploads(settings: Settings, path: str, tokens_file: str, log: str) -> None:
    """Delete what a k6_upload.js run uploaded, as its ``log`` lists it
    ("BENCH_MEDIA <token index> <media id>" lines), each with its owner's token.

    The dev stack's object store holds ~1.6 GB (SeaweedFS: 25 volumes of 64 MB
    for the bucket) and a default run uploads ~0.23 GB: kept, a few runs would
    fill it. (SeaweedFS frees deleted bytes when it vacuums: every 14 minutes.)
    """
    tokens: list[str] = json.loads(Path(tokens_file).read_text())
    uploads = [line.split()[1:3] for line in log.splitlines() if line.startswith("BENCH_MEDIA ")]
    with ThreadPoolExecutor(max_workers=REGISTER_THREADS) as pool:
        statuses = list(
            pool.map(
                lambda u: delete(settings, f"{path}/{u[1]}", f"Bearer {tokens[int(u[0])]}"),
                uploads,
            )
        )
    if failed := sum(status != 204 for status in statuses):
        print(
            f"bench: {failed} of {len(uploads)} uploads not deleted (statuses "
            f"{sorted(set(statuses))}): the media service sweeps them after 24 h",
            file=sys.stderr,
        )
