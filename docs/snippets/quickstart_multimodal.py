import torch
from torch import nn

import gradsurgery as gs

torch.manual_seed(0)
n_classes, n_domains, width = 4, 2, 16

# Toy data from two source domains: both modalities carry the class, shifted by the domain.
n = 256
y = torch.randint(n_classes, (n,))  # class labels
d = torch.randint(n_domains, (n,))  # domain labels
x_video = nn.functional.one_hot(y, 10).float() + 0.5 * d[:, None] + 0.3 * torch.randn(n, 10)
x_audio = nn.functional.one_hot(y, 6).float() - 0.5 * d[:, None] + 0.8 * torch.randn(n, 6)

video_enc = nn.Sequential(nn.Linear(10, width), nn.ReLU())
audio_enc = nn.Sequential(nn.Linear(6, width), nn.ReLU())
classifier = nn.Linear(2 * width, n_classes)  # on concat(video, audio) features
discriminator = nn.Linear(2 * width, n_domains)  # the same features, behind a reversal layer
reverse = gs.signals.GradientReversal(0.3)  # its coefficient is the adversarial weight lambda
modules = [video_enc, audio_enc, classifier, discriminator]
optimizer = torch.optim.Adam([p for m in modules for p in m.parameters()], lr=1e-3)

method = gs.GMP()  # alpha_k=0.5, alpha_p=0.5
blocks = {"video": list(video_enc.parameters()), "audio": list(audio_enc.parameters())}

for _ in range(20):
    optimizer.zero_grad(set_to_none=True)
    feats = {"video": video_enc(x_video), "audio": audio_enc(x_audio)}  # concatenation order
    fused = torch.cat([feats["video"], feats["audio"]], dim=1)
    losses = {
        "cls": nn.functional.cross_entropy(classifier(fused), y),
        "dom": nn.functional.cross_entropy(discriminator(reverse(fused)), d),
    }
    # Each modality's block of the linear heads (no bias) gives its own logits; the signals
    # are the batch-mean probabilities of the true class and of the true domain.
    signals = gs.signals.modality_confidences(
        feats, classifier=classifier, targets=y, discriminator=discriminator, domains=d
    )
    report = gs.backward(losses, blocks, method, signals)  # instead of sum(losses).backward()
    optimizer.step()

for m in ("video", "audio"):
    details = report[m].details
    print(m, {key: details[key] for key in ("rho", "sigma", "k", "p", "projected_task")})
