"""CMMLU: 67 subjects of Chinese multiple-choice questions (Li et al. 2023), test split, 11,582 questions.

Data: HF `haonan-li/cmmlu` (one config per subject; dev for shots) or `cmmlu/{test,dev}/<subject>.csv`
(columns: index, Question, A, B, C, D, Answer).
Protocol (ChatGLM3 README grid, 67.5 for ChatGLM3-6B-Base): 0-shot multiple choice; `shots=5` takes the
subject's five dev questions. Prompt of CMMLU's own evaluation code (src/mp_utils.py):
  "以下是关于{科目}的单项选择题，请直接给出正确答案的选项。\n\n题目：{question}\nA. …\nB. …\nC. …\nD. …\n答案是：".
Scoring: task.choice_scoring (tasks/choice.py): logits of ▁A…▁D after the cue by default.
Averaging: headline micro (per question); macro over the 67 subjects and CMMLU's categories (STEM, Humanities,
Social Science, Other, and the overlapping "China specific" group, from its src/categories.py) are reported too.
"""
from __future__ import annotations

from pathlib import Path

from glm_eval.tasks.choice import MultipleChoiceTask, letter_columns_doc, options_block, read_subject_csvs

# subject, Chinese name, categories (CMMLU src/categories.py: subcategory → category; "China" = China specific)
SUBJECTS = """agronomy 农学 Other|anatomy 解剖学 STEM|ancient_chinese 古汉语 Social-Science,China|arts 艺术学 Humanities
astronomy 天文学 STEM|business_ethics 商业伦理 Social-Science|chinese_civil_service_exam 中国公务员考试 Social-Science,China
chinese_driving_rule 中国驾驶规则 Other,China|chinese_food_culture 中国饮食文化 Social-Science,China
chinese_foreign_policy 中国外交政策 Social-Science,China|chinese_history 中国历史 Humanities,China
chinese_literature 中国文学 Humanities,China|chinese_teacher_qualification 中国教师资格 Social-Science,China
clinical_knowledge 临床知识 Other|college_actuarial_science 大学精算学 STEM|college_education 大学教育学 Social-Science
college_engineering_hydrology 大学工程水文学 STEM|college_law 大学法律 Humanities|college_mathematics 大学数学 STEM
college_medical_statistics 大学医学统计 STEM|college_medicine 大学医学 Other|computer_science 计算机科学 STEM
computer_security 计算机安全 Other|conceptual_physics 概念物理学 STEM|construction_project_management 建设工程管理 Other,China
economics 经济学 Social-Science|education 教育学 Social-Science|electrical_engineering 电气工程 STEM
elementary_chinese 小学语文 Social-Science,China|elementary_commonsense 小学常识 Other,China
elementary_information_and_technology 小学信息技术 Other|elementary_mathematics 初等数学 STEM
ethnology 民族学 Social-Science,China|food_science 食品科学 Other|genetics 遗传学 STEM|global_facts 全球事实 Humanities
high_school_biology 高中生物 STEM|high_school_chemistry 高中化学 STEM|high_school_geography 高中地理 Social-Science
high_school_mathematics 高中数学 STEM|high_school_physics 高中物理学 STEM|high_school_politics 高中政治 Social-Science,China
human_sexuality 人类性行为 Other|international_law 国际法学 Humanities|journalism 新闻学 Social-Science
jurisprudence 法理学 Humanities|legal_and_moral_basis 法律与道德基础 Other|logical 逻辑学 Humanities
machine_learning 机器学习 STEM|management 管理学 Social-Science|marketing 市场营销 Social-Science
marxist_theory 马克思主义理论 Humanities|modern_chinese 现代汉语 Social-Science,China|nutrition 营养学 Other
philosophy 哲学 Humanities|professional_accounting 专业会计 Social-Science|professional_law 专业法学 Humanities
professional_medicine 专业医学 Other|professional_psychology 专业心理学 Social-Science|public_relations 公共关系 Social-Science
security_study 安全研究 Social-Science|sociology 社会学 Social-Science|sports_science 体育学 Other
traditional_chinese_medicine 中医中药 Other,China|virology 病毒学 STEM|world_history 世界历史 Humanities
world_religions 世界宗教 Humanities"""
TABLE = {name: (zh, [c.replace("-", " ").replace("China", "China specific") for c in cats.split(",")])
         for name, zh, cats in (entry.split() for line in SUBJECTS.splitlines() for entry in line.split("|"))}


class CMMLU(MultipleChoiceTask):
    title = "CMMLU"
    description = "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n"
    cue = "答案是："

    def local_rows(self, path: Path):
        return read_subject_csvs(path)

    def hub_rows(self, split: str):
        return self.hub_rows_per_config(list(TABLE), split)

    def subject_name(self, subject: str) -> str:
        return TABLE.get(subject, (subject.replace("_", " "), []))[0]

    def question_text(self, doc: dict) -> str:
        return f"题目：{doc['question'].strip()}{options_block(doc['options'], doc['letters'])}\n{self.cue}"

    def parse(self, row: dict) -> dict | None:
        return letter_columns_doc(row, "Question", "Answer", TABLE.get(row["subject"], ("", ["Other"]))[1])


TASK = CMMLU
