from setuptools import find_packages, setup

setup(
    name="vjepa",
    version="0.1.0",
    description="Trainer and evaluator for JEPA-style self-supervised video world models",
    python_requires=">=3.10",
    packages=[*find_packages(include=["vjepa", "vjepa.*", "evals", "evals.*", "app", "app.*"]), "vjepa.configs"],
    # the recipes in configs/ ship inside the package, so an installed `vjepa` finds its defaults from any folder
    package_dir={"vjepa.configs": "configs"},
    package_data={"vjepa.configs": ["*.yaml", "*/*.yaml"]},
    install_requires=[
        # torch and torchvision are resolved together: timm imports torchvision.
        "torch>=2.2",
        "torchvision",
        "timm>=1.0",
        "decord>=0.6",
        "scikit-learn>=1.3",
        "submitit>=1.5",
        "omegaconf>=2.3",
        "pymunk>=6.6",  # the synthetic physics world
        "av>=12",  # H.264 video writing for the world
        "numpy",
        "tqdm",
        "matplotlib",
        "pyyaml",
    ],
    # videomae: published VideoMAE models as feature sources and world models (the tests use them too)
    extras_require={"test": ["pytest>=8", "transformers>=4.57"], "videomae": ["transformers>=4.57"]},
    entry_points={"console_scripts": ["vjepa=app.cli:main"]},
)
