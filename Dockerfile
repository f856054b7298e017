# iseg on Docker and on Hugging Face Spaces (Docker SDK): non-root user 1000, port 7860, data under $ISEG_HOME.
#   docker build -t iseg .                                                    # CPU build of PyTorch (default)
#   docker build -t iseg:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu130 .
#   docker run -p 7860:7860 -v iseg-data:/home/user/data iseg
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

# Where PyTorch comes from: its CPU wheels by default (small), a CUDA index for GPU hosts.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1

RUN useradd --create-home --uid 1000 user
WORKDIR /home/user/app

# Dependencies first (cached while only the code changes); torch and torchvision pinned exactly.
COPY --chown=user:user requirements.txt .
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" torch==2.14.1 torchvision==0.29.1 \
 && pip install --no-cache-dir -r requirements.txt

COPY --chown=user:user . .
# the page decoder's runtime (onnxruntime-web, pinned by ui/vendor/onnxruntime-web/VERSION and SHA256SUMS)
RUN python ui/vendor/fetch_onnxruntime_web.py
RUN mkdir -p /home/user/data /home/user/.cache/huggingface \
 && chown -R user:user /home/user/data /home/user/.cache

USER 1000
ENV HOME=/home/user \
    ISEG_HOME=/home/user/data \
    HF_HOME=/home/user/.cache/huggingface \
    ISEG_HOST=0.0.0.0 \
    PORT=7860
EXPOSE 7860
CMD ["python", "app.py"]
