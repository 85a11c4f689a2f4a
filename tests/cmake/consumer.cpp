// A program built against torchtrain from another project: it must compile, link and train.
#include <torchtrain/torchtrain.hpp>

namespace tt = torchtrain;

int main() {
  auto x = torch::randn({16, 3});
  auto y = (x.sum(1) > 0).to(torch::kLong);
  tt::TrainingArguments args;
  args.output_dir = "consumer_output";
  args.max_steps = 2;
  args.save_strategy = tt::SaveStrategy::no;
  args.disable_tqdm = true;
  tt::Trainer trainer(torch::nn::Linear(3, 2), args, tt::data::TensorDataset(x, y));
  return trainer.train().global_step == 2 ? 0 : 1;
}
