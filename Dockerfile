# beamscore: one image that is both the Beam SDK worker container of a Dataflow job
# (ENTRYPOINT /opt/apache/beam/boot) and the launcher image of its Flex Template (Dataflow
# runs /opt/google/dataflow/python_template_launcher, which runs FLEX_TEMPLATE_PYTHON_PY_FILE).
# Launcher and workers therefore have the same Python, Beam and packages.
#
# Production (docs/dataflow.md):  docker build -t IMAGE .
# Offline (make image, deploy/image/build.sh): buildah with a debootstrap base and local
# stand-ins for the two images below, which cannot be pulled offline.
#
# No secret is built in: the database password comes from the environment at run time
# (sink.password_env), and a pip configuration for a private index is passed to the build
# as a secret (id pip.conf), never as an ARG or ENV.

ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG BEAM_SDK_IMAGE=apache/beam_python3.11_sdk:2.77.0
ARG LAUNCHER_IMAGE=gcr.io/dataflow-templates-base/python311-template-launcher-base

FROM ${BEAM_SDK_IMAGE} AS beam_sdk
FROM ${LAUNCHER_IMAGE} AS launcher

FROM ${BASE_IMAGE}
# Must equal BEAM_VERSION in setup.py (tests/deploy checks it; pip refuses a mismatch).
ARG BEAM_VERSION=2.77.0
ARG WORKDIR=/template

# Beam's SDK harness boot entrypoint: makes this image usable as sdk_container_image.
COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam
# The Flex Template launcher: makes this image usable as a Flex Template image.
COPY --from=launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

# A virtualenv first on PATH works the same on python:3.11-slim (/usr/local) and on
# Debian's python3 (PEP 668 forbids pip into /usr). Beam's boot would otherwise create
# its own venv at worker start and not see the packages of this one. PYTHONSAFEPATH: the
# launcher runs `python /template/pipelines/template.py`, which would put pipelines/ first
# on sys.path, where a module (pipelines/tracking.py) shadows a top-level package.
# GLIBC_TUNABLES and ARROW_DEFAULT_MEMORY_POOL: the allocator settings of
# engine/allocator.py (TUNABLES and ARROW_POOL, the same values), for Dataflow's workers
# and the launcher; OPENBLAS/OMP/MKL_NUM_THREADS: one thread of math per process
# (engine/math_threads.py), as the console script sets them.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1 \
    PYTHONSAFEPATH=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    GRPC_ENABLE_FORK_SUPPORT=false \
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1 \
    ARROW_DEFAULT_MEMORY_POOL=system \
    OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1

WORKDIR ${WORKDIR}

# Dependencies first (a layer that survives code changes): setup.py with empty stand-ins
# for the packages it lists.
COPY setup.py ./
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=ca.crt \
    --mount=type=cache,target=/root/.cache/pip \
    set -eu; \
    if [ -s /run/secrets/pip.conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip.conf; fi; \
    python3 -m venv "$VIRTUAL_ENV"; \
    python -m pip install --upgrade pip setuptools wheel; \
    pkgs=$(python -c "import ast; t = ast.parse(open('setup.py').read()); \
print(' '.join(p for k in ast.walk(t) if isinstance(k, ast.keyword) and k.arg == 'packages' \
for p in ast.literal_eval(k.value)))"); \
    for p in $pkgs; do mkdir -p "$p" && touch "$p/__init__.py"; done; \
    python -m pip install . "apache-beam[gcp]==${BEAM_VERSION}"; \
    python -m pip uninstall -y beamscore; \
    for p in $pkgs; do rm -rf "$p"; done; \
    rm -rf build ./*.egg-info

# The package itself (what .dockerignore leaves of the repository); the Flex Template
# entry below is its flags-only pipelines/template.py.
COPY . ./
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=ca.crt \
    set -eu; \
    if [ -s /run/secrets/pip.conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip.conf; fi; \
    python -m pip install --no-cache-dir --no-deps --no-build-isolation . ; \
    rm -rf build ./*.egg-info; \
    python -m pip check; \
    python -c "import apache_beam, sys; v = apache_beam.__version__; \
sys.exit(0 if v == '${BEAM_VERSION}' else f'apache-beam {v} != BEAM_VERSION ${BEAM_VERSION}')"; \
    python -m pipelines.template --help > /dev/null; \
    python "$PWD/pipelines/template.py" --help > /dev/null; \
    python -m pip freeze

# The launcher runs this file with the template's parameters as --name=value flags. The
# package is installed (the image is the workers' container too), so no
# FLEX_TEMPLATE_PYTHON_SETUP_FILE or _REQUIREMENTS_FILE: setting one would make the
# launcher stage the package for workers to reinstall at start-up.
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=${WORKDIR}/pipelines/template.py

ENTRYPOINT ["/opt/apache/beam/boot"]
